import { gcm } from '@noble/ciphers/aes.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { checkKey, checkNonce, type Aead, type AeadAlgorithm, type AeadProvider } from './aead.js';
import type { SecretKey } from './secret.js';

/**
 * @noble/ciphers AEAD: audited pure JavaScript, independent of OpenSSL. Too slow
 * for the data path (about 7x slower than createCipheriv, docs/performance.md); it is the
 * reference the vectors and the differential tests run against.
 */
const GCM_NONCE_LENGTHS = { min: 8, max: Number.MAX_SAFE_INTEGER };

class NobleAead implements Aead {
  readonly implementation = 'noble';
  readonly #key: Uint8Array;

  constructor(
    readonly algorithm: AeadAlgorithm,
    key: SecretKey,
  ) {
    checkKey(algorithm, key);
    this.#key = key.exposeDanger();
  }

  #cipher(nonce: Uint8Array, aad: Uint8Array) {
    checkNonce(this.algorithm, nonce, GCM_NONCE_LENGTHS);
    return this.algorithm === 'chacha20-poly1305'
      ? chacha20poly1305(this.#key, nonce, aad)
      : gcm(this.#key, nonce, aad);
  }

  seal(nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
    return this.#cipher(nonce, aad).encrypt(plaintext);
  }

  open(nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null {
    const cipher = this.#cipher(nonce, aad);
    try {
      return cipher.decrypt(sealed);
    } catch {
      // noble throws on a short input or a tag mismatch; both mean "not authentic".
      return null;
    }
  }
}

export const nobleAeadProvider: AeadProvider = {
  name: 'noble',
  gcmNonceLengths: GCM_NONCE_LENGTHS,
  create: (algorithm, key) => new NobleAead(algorithm, key),
};
