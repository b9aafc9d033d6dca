import { createCipheriv, createDecipheriv, type CipherGCMTypes } from 'node:crypto';
import { AEAD_TAG_LENGTH, checkKey, checkNonce, type Aead, type AeadAlgorithm, type AeadProvider } from './aead.js';
import type { SecretKey } from './secret.js';

// The GCM overloads type `authTagLength`; chacha20-poly1305 takes the same options at run time.
type NodeAeadName = CipherGCMTypes;

/** node:crypto (OpenSSL) AEAD: the data path's TypeScript implementation. One cipher context per call. */
const GCM_NONCE_LENGTHS = { min: 1, max: 128 };

class NodeAead implements Aead {
  readonly implementation = 'node';
  readonly #key: Uint8Array;

  constructor(
    readonly algorithm: AeadAlgorithm,
    key: SecretKey,
  ) {
    checkKey(algorithm, key);
    this.#key = key.exposeDanger();
  }

  seal(nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
    checkNonce(this.algorithm, nonce, GCM_NONCE_LENGTHS);
    const cipher = createCipheriv(this.algorithm as NodeAeadName, this.#key, nonce, { authTagLength: AEAD_TAG_LENGTH });
    cipher.setAAD(aad, { plaintextLength: plaintext.length });
    const body = cipher.update(plaintext);
    const tail = cipher.final();
    const tag = cipher.getAuthTag();
    const out = new Uint8Array(body.length + tail.length + tag.length);
    out.set(body, 0);
    out.set(tail, body.length);
    out.set(tag, body.length + tail.length);
    return out;
  }

  open(nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null {
    checkNonce(this.algorithm, nonce, GCM_NONCE_LENGTHS);
    if (sealed.length < AEAD_TAG_LENGTH) return null;
    const ctLength = sealed.length - AEAD_TAG_LENGTH;
    const decipher = createDecipheriv(this.algorithm as NodeAeadName, this.#key, nonce, {
      authTagLength: AEAD_TAG_LENGTH,
    });
    decipher.setAuthTag(sealed.subarray(ctLength));
    decipher.setAAD(aad, { plaintextLength: ctLength });
    const body = decipher.update(sealed.subarray(0, ctLength));
    try {
      decipher.final();
    } catch {
      // OpenSSL signals a tag mismatch only by throwing from final(); that is data, not an error.
      return null;
    }
    return new Uint8Array(body.buffer, body.byteOffset, body.length);
  }
}

export const nodeAeadProvider: AeadProvider = {
  name: 'node',
  gcmNonceLengths: GCM_NONCE_LENGTHS,
  create: (algorithm, key) => new NodeAead(algorithm, key),
};
