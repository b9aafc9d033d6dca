import {
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
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
  /** A fresh key pair, where the implementation has a faster way than random bytes and publicKey(). */
  generateKeyPair?(): X25519KeyPair;
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

// The PKCS#8 wrapper for a raw X25519 private key (RFC 8410 §7; OID 1.3.101.110), and the
// SubjectPublicKeyInfo one for a public key (RFC 8410 §4).
const PKCS8_PREFIX = hexToBytes('302e020100300506032b656e04220420');
const SPKI_PREFIX = hexToBytes('302a300506032b656e032100');

/** The raw key after a fixed DER prefix; throws when OpenSSL wrote another encoding. */
function afterPrefix(der: Uint8Array, prefix: Uint8Array): Uint8Array {
  const ok = der.length === prefix.length + X25519_KEY_LENGTH && prefix.every((b, i) => der[i] === b);
  if (!ok) throw new Error('X25519: unexpected DER encoding of a generated key');
  return der.slice(prefix.length);
}

/**
 * OpenSSL 3 decodes a PKCS#8 key in about half a millisecond, ten times the agreement itself, so
 * each private key is decoded once: a host's identity key agrees with every peer. A key wiped
 * (SecretKey.wipe) is refused rather than served from here.
 */
const privateKeyObjects = new WeakMap<SecretKey, KeyObject>();

function nodePrivateKey(privateKey: SecretKey): KeyObject {
  const cached = privateKeyObjects.get(privateKey);
  if (cached) {
    if (isAllZero(privateKey.exposeDanger())) throw new RangeError('X25519: the private key was wiped');
    return cached;
  }
  const key = createPrivateKey({
    key: Buffer.from(concatBytes(PKCS8_PREFIX, privateKey.exposeDanger())),
    format: 'der',
    type: 'pkcs8',
  });
  privateKeyObjects.set(privateKey, key);
  return key;
}

/** A public key as a JWK (RFC 8037 §2): Node imports it without the DER decoder. */
function nodePublicKey(publicKey: Uint8Array): KeyObject {
  return createPublicKey({
    key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(publicKey).toString('base64url') },
    format: 'jwk',
  });
}

export const nodeX25519: X25519 = {
  implementation: 'node',
  publicKey(privateKey) {
    checkLengths(privateKey);
    // DER, not JWK: see generateKeyPair (a generated key is served from privateKeyObjects).
    return afterPrefix(
      createPublicKey(nodePrivateKey(privateKey)).export({ format: 'der', type: 'spki' }),
      SPKI_PREFIX,
    );
  },
  sharedSecret(privateKey, publicKey) {
    checkLengths(privateKey, publicKey);
    let shared: Uint8Array;
    try {
      shared = diffieHellman({ privateKey: nodePrivateKey(privateKey), publicKey: nodePublicKey(publicKey) });
    } catch (err) {
      if (err instanceof RangeError) throw err;
      return null; // OpenSSL refuses an all-zero result
    }
    return isAllZero(shared) ? null : new SecretKey(shared);
  },
  generateKeyPair() {
    const pair = generateKeyPairSync('x25519');
    // DER, not JWK: Node 20 can deadlock exporting a generated key as JWK when a garbage collection
    // during the export frees the generating job, which takes the lock the export holds.
    const der = pair.privateKey.export({ format: 'der', type: 'pkcs8' });
    const privateKey = new SecretKey(afterPrefix(der, PKCS8_PREFIX));
    der.fill(0);
    privateKeyObjects.set(privateKey, pair.privateKey);
    return { privateKey, publicKey: afterPrefix(pair.publicKey.export({ format: 'der', type: 'spki' }), SPKI_PREFIX) };
  },
};

/**
 * The implementation the control plane uses: node:crypto (OpenSSL) agrees a key in about a tenth of
 * noble's time (docs/performance.md), which the leader pays once per member at every rotation.
 */
export const x25519 = nodeX25519;

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
  if (impl.generateKeyPair) return impl.generateKeyPair();
  const privateKey = new SecretKey(randomBytes(X25519_KEY_LENGTH));
  return { privateKey, publicKey: impl.publicKey(privateKey) };
}
