import { AEAD_NONCE_LENGTH, AEAD_TAG_LENGTH, type AeadProvider } from './aead.js';
import { nodeAeadProvider } from './aead-node.js';
import { concatBytes, lengthPrefixed, u64Bytes, utf8Bytes } from './bytes.js';
import { hkdfSha256, type HkdfSha256 } from './hkdf.js';
import { SecretKey } from './secret.js';
import { X25519_KEY_LENGTH, generateX25519KeyPair, x25519, type X25519 } from './x25519.js';

/*
 * Wrapping an epoch secret for one member host, so that etcd (and its backups)
 * never hold a usable key (docs/keys.md "Key wrap"). An ECIES / HPKE-base-like construction:
 *
 *   shared  = X25519(ephemeral, recipientPublic)                 RFC 7748
 *   key     = HKDF-SHA256(ikm = shared,
 *                         salt = ephemeralPublic || recipientPublic,
 *                         info = LABEL, 32)                      RFC 5869
 *   aad     = LABEL || lp(networkId) || u64(epoch) || lp(hostId)
 *   wrapped = VERSION || ephemeralPublic || ChaCha20-Poly1305(key, nonce 0, secret, aad)
 *
 * Each wrap draws a fresh ephemeral key, so each AEAD key seals exactly one
 * message and a fixed all-zero nonce is safe (as in RFC 9180 §5.2, first message).
 * The AAD binds the secret to its network, epoch and host: a wrapped value copied
 * to another key in etcd does not unwrap.
 *
 *   0          1                               33                 33+len+16
 *  +----------+-------------------------------+------------------+---------+
 *  | version  |  ephemeral public key (32)    |  ciphertext      | tag(16) |
 *  +----------+-------------------------------+------------------+---------+
 */

export const KEYWRAP_VERSION = 1;
export const KEYWRAP_LABEL = 'veil keywrap v1';
const VERSION_OFFSET = 0;
const EPHEMERAL_OFFSET = 1;
const CIPHERTEXT_OFFSET = EPHEMERAL_OFFSET + X25519_KEY_LENGTH;
const WRAP_KEY_LENGTH = 32;
const ZERO_NONCE = new Uint8Array(AEAD_NONCE_LENGTH);

export interface WrapContext {
  networkId: string;
  epoch: number;
  hostId: string;
}

export interface KeyWrapDeps {
  aead: AeadProvider;
  x25519: X25519;
  hkdf: HkdfSha256;
}

const defaultDeps: KeyWrapDeps = { aead: nodeAeadProvider, x25519, hkdf: hkdfSha256 };

export class KeyWrapError extends Error {
  override readonly name = 'KeyWrapError';
}

function wrapAad(ctx: WrapContext): Uint8Array {
  return concatBytes(
    utf8Bytes(KEYWRAP_LABEL),
    lengthPrefixed(ctx.networkId),
    u64Bytes(ctx.epoch),
    lengthPrefixed(ctx.hostId),
  );
}

function wrapKey(
  deps: KeyWrapDeps,
  shared: SecretKey,
  ephemeralPublic: Uint8Array,
  recipientPublic: Uint8Array,
): SecretKey {
  const okm = deps.hkdf.derive(
    shared.exposeDanger(),
    concatBytes(ephemeralPublic, recipientPublic),
    utf8Bytes(KEYWRAP_LABEL),
    WRAP_KEY_LENGTH,
  );
  return new SecretKey(okm);
}

export function wrapSecret(
  secret: SecretKey,
  recipientPublic: Uint8Array,
  ctx: WrapContext,
  deps: KeyWrapDeps = defaultDeps,
  ephemeral?: SecretKey,
): Uint8Array {
  const pair = ephemeral
    ? { privateKey: ephemeral, publicKey: deps.x25519.publicKey(ephemeral) }
    : generateX25519KeyPair(deps.x25519);
  const ephemeralPrivate = pair.privateKey;
  const ephemeralPublic = pair.publicKey;
  const shared = deps.x25519.sharedSecret(ephemeralPrivate, recipientPublic);
  if (!shared) throw new KeyWrapError('recipient public key is of low order');
  const aead = deps.aead.create('chacha20-poly1305', wrapKey(deps, shared, ephemeralPublic, recipientPublic));
  const sealed = aead.seal(ZERO_NONCE, secret.exposeDanger(), wrapAad(ctx));
  return concatBytes(Uint8Array.of(KEYWRAP_VERSION), ephemeralPublic, sealed);
}

/** Returns the secret, or null when `wrapped` was not made for this host and context. */
export function unwrapSecret(
  wrapped: Uint8Array,
  recipientPrivate: SecretKey,
  ctx: WrapContext,
  deps: KeyWrapDeps = defaultDeps,
): SecretKey | null {
  if (wrapped.length < CIPHERTEXT_OFFSET + AEAD_TAG_LENGTH || wrapped[VERSION_OFFSET] !== KEYWRAP_VERSION) return null;
  const ephemeralPublic = wrapped.subarray(EPHEMERAL_OFFSET, CIPHERTEXT_OFFSET);
  const shared = deps.x25519.sharedSecret(recipientPrivate, ephemeralPublic);
  if (!shared) return null;
  const recipientPublic = deps.x25519.publicKey(recipientPrivate);
  const aead = deps.aead.create('chacha20-poly1305', wrapKey(deps, shared, ephemeralPublic, recipientPublic));
  const secret = aead.open(ZERO_NONCE, wrapped.subarray(CIPHERTEXT_OFFSET), wrapAad(ctx));
  return secret ? new SecretKey(secret) : null;
}
