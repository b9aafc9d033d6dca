import { hkdfSync } from 'node:crypto';
import { hkdf as nobleHkdfImpl } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';

/** RFC 5869 §2.3: L <= 255 * HashLen. */
export const HKDF_SHA256_MAX_LENGTH = 255 * 32;

/** HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` to `length` bytes. */
export interface HkdfSha256 {
  readonly implementation: string;
  derive(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array;
}

function checkLength(length: number): void {
  if (!Number.isInteger(length) || length < 0 || length > HKDF_SHA256_MAX_LENGTH) {
    throw new RangeError(`HKDF-SHA256: output length must be 0..${HKDF_SHA256_MAX_LENGTH}`);
  }
}

export const nodeHkdf: HkdfSha256 = {
  implementation: 'node',
  derive(ikm, salt, info, length) {
    checkLength(length);
    if (length === 0) return new Uint8Array(0);
    return new Uint8Array(hkdfSync('sha256', ikm, salt, info, length));
  },
};

export const nobleHkdf: HkdfSha256 = {
  implementation: 'noble',
  derive(ikm, salt, info, length) {
    checkLength(length);
    if (length === 0) return new Uint8Array(0);
    return nobleHkdfImpl(sha256, ikm, salt, info, length);
  },
};

/** The implementation the control plane uses. */
export const hkdfSha256 = nodeHkdf;
