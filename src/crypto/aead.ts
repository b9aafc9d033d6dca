import type { SecretKey } from './secret.js';

/** AEAD algorithms veil uses: AES-GCM for ESP (RFC 4106), ChaCha20-Poly1305 (RFC 8439) for key wrap. */
export type AeadAlgorithm = 'aes-128-gcm' | 'aes-192-gcm' | 'aes-256-gcm' | 'chacha20-poly1305';

export const AEAD_KEY_LENGTH: Readonly<Record<AeadAlgorithm, number>> = {
  'aes-128-gcm': 16,
  'aes-192-gcm': 24,
  'aes-256-gcm': 32,
  'chacha20-poly1305': 32,
};

/** Full 128-bit tags only: RFC 4106 §3 allows 8/12/16, veil always uses 16 (docs/wire.md "ESP in UDP"). */
export const AEAD_TAG_LENGTH = 16;

/** The nonce length every veil protocol uses (RFC 4106 §4: salt 4 || IV 8; RFC 8439 §2.8). */
export const AEAD_NONCE_LENGTH = 12;

/**
 * An AEAD bound to one key. `seal` returns ciphertext || tag; `open` returns the
 * plaintext, or null when the tag does not verify. Both throw AeadInputError
 * only for malformed arguments (a nonce length the algorithm cannot take),
 * never for bad data.
 */
export interface Aead {
  readonly algorithm: AeadAlgorithm;
  readonly implementation: string;
  seal(nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array;
  open(nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null;
}

/** Makes Aead instances; one provider per implementation (node:crypto, @noble/ciphers). */
export interface AeadProvider {
  readonly name: string;
  /**
   * GCM nonce lengths (bytes) this implementation accepts. SP 800-38D allows any
   * non-empty IV, but libraries bound it: OpenSSL via node:crypto takes at most
   * 128 bytes, @noble/ciphers at least 8. veil itself only uses 12 (RFC 4106 §4).
   */
  readonly gcmNonceLengths: { min: number; max: number };
  create(algorithm: AeadAlgorithm, key: SecretKey): Aead;
}

export class AeadInputError extends Error {
  override readonly name = 'AeadInputError';
}

/** ChaCha20-Poly1305 takes exactly 96 bits (RFC 8439 §2.8); GCM a non-empty IV within the implementation's range. */
export function checkNonce(algorithm: AeadAlgorithm, nonce: Uint8Array, gcmRange: { min: number; max: number }): void {
  if (algorithm === 'chacha20-poly1305') {
    if (nonce.length !== AEAD_NONCE_LENGTH)
      throw new AeadInputError(`${algorithm}: nonce must be 12 bytes, got ${nonce.length}`);
  } else if (nonce.length === 0 || nonce.length < gcmRange.min || nonce.length > gcmRange.max) {
    throw new AeadInputError(
      `${algorithm}: nonce of ${nonce.length} bytes is outside ${Math.max(1, gcmRange.min)}..${gcmRange.max}`,
    );
  }
}

export function checkKey(algorithm: AeadAlgorithm, key: SecretKey): void {
  const want = AEAD_KEY_LENGTH[algorithm];
  if (key.length !== want) throw new AeadInputError(`${algorithm}: key must be ${want} bytes, got ${key.length}`);
}
