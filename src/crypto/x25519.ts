import { createPrivateKey, createPublicKey, diffieHellman, randomBytes } from 'node:crypto';
import { x25519 as nobleX25519Impl } from '@noble/curves/ed25519.js';
import { concatBytes, hexToBytes, isAllZero } from './bytes.js';
import { SecretKey } from './secret.js';

/** RFC 7748 §5: scalars and u-coordinates are 32 bytes. */
export const X25519_KEY_LENGTH = 32;

/**
 * X25519 Diffie-Hellman. `sharedSecret` returns null when the result is all
 * zeros (a low-order public key, RFC 7748 §6.1): a key derived from it would be
 * known to anyone, so veil refuses it in every implementation alike.
 */
export interface X25519 {
  readonly implementation: string;
  publicKey(privateKey: SecretKey): Uint8Array;
  sharedSecret(privateKey: SecretKey, publicKey: Uint8Array): SecretKey | null;
}

function checkLengths(privateKey: SecretKey, publicKey?: Uint8Array): void {
  if (privateKey.length !== X25519_KEY_LENGTH) throw new RangeError('X25519: private key must be 32 bytes');
  if (publicKey && publicKey.length !== X25519_KEY_LENGTH) throw new RangeError('X25519: public key must be 32 bytes');
}

export const nobleX25519: X25519 = {
  implementation: 'noble',
  publicKey(privateKey) {
    checkLengths(privateKey);
    return nobleX25519Impl.getPublicKey(privateKey.exposeDanger());
  },
  sharedSecret(privateKey, publicKey) {
    checkLengths(privateKey, publicKey);
    let shared: Uint8Array;
    try {
      shared = nobleX25519Impl.getSharedSecret(privateKey.exposeDanger(), publicKey);
    } catch {
      return null; // noble rejects an all-zero result by throwing
    }
    return isAllZero(shared) ? null : new SecretKey(shared);
  },
};

// DER wrappers for raw X25519 keys (RFC 8410 §7 PKCS#8, §4 SubjectPublicKeyInfo; OID 1.3.101.110).
const PKCS8_PREFIX = hexToBytes('302e020100300506032b656e04220420');
const SPKI_PREFIX = hexToBytes('302a300506032b656e032100');

function nodePrivateKey(privateKey: SecretKey) {
  return createPrivateKey({
    key: Buffer.from(concatBytes(PKCS8_PREFIX, privateKey.exposeDanger())),
    format: 'der',
    type: 'pkcs8',
  });
}

export const nodeX25519: X25519 = {
  implementation: 'node',
  publicKey(privateKey) {
    checkLengths(privateKey);
    const spki = createPublicKey(nodePrivateKey(privateKey)).export({ format: 'der', type: 'spki' });
    return new Uint8Array(spki.subarray(SPKI_PREFIX.length));
  },
  sharedSecret(privateKey, publicKey) {
    checkLengths(privateKey, publicKey);
    const peer = createPublicKey({
      key: Buffer.from(concatBytes(SPKI_PREFIX, publicKey)),
      format: 'der',
      type: 'spki',
    });
    let shared: Uint8Array;
    try {
      shared = diffieHellman({ privateKey: nodePrivateKey(privateKey), publicKey: peer });
    } catch {
      return null; // OpenSSL refuses an all-zero result
    }
    return isAllZero(shared) ? null : new SecretKey(shared);
  },
};

/** The implementation the control plane uses. */
export const x25519 = nobleX25519;

/**
 * Any private key, once clamped (RFC 7748 §5), is a multiple of 8, so it maps exactly the low-order
 * points (order 1, 2, 4 or 8) to zero; this one is no multiple of the large prime order either.
 */
const LOW_ORDER_PROBE = new SecretKey(new Uint8Array(X25519_KEY_LENGTH).fill(0x5a));

/**
 * Whether a public key agrees only all-zero secrets (RFC 7748 §6.1): with such a key no host can
 * agree a secret, so a host record carrying one is refused instead of failing every SA later.
 */
export function isLowOrderPublicKey(publicKey: Uint8Array, impl: X25519 = x25519): boolean {
  return impl.sharedSecret(LOW_ORDER_PROBE, publicKey) === null;
}

export interface X25519KeyPair {
  privateKey: SecretKey;
  publicKey: Uint8Array;
}

export function generateX25519KeyPair(impl: X25519 = x25519): X25519KeyPair {
  const privateKey = new SecretKey(randomBytes(X25519_KEY_LENGTH));
  return { privateKey, publicKey: impl.publicKey(privateKey) };
}
