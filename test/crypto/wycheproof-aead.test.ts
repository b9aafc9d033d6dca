import { afterAll, describe, expect, it } from 'vitest';
import { AEAD_TAG_LENGTH, AeadInputError, type AeadAlgorithm, type AeadProvider } from '../../src/crypto/aead.js';
import { nobleAeadProvider } from '../../src/crypto/aead-noble.js';
import { nodeAeadProvider } from '../../src/crypto/aead-node.js';
import { bytesToHex, concatBytes, hexToBytes } from '../../src/crypto/bytes.js';
import { SecretKey } from '../../src/crypto/secret.js';
import { nativeAeadProvider, nativeAvailable } from '../../src/vxlan/native/addon.js';
import { loadVectors, VectorTally, type WycheproofFile, type WycheproofResult } from '../support/vectors.js';

interface AeadCase {
  tcId: number;
  comment: string;
  key: string;
  iv: string;
  aad: string;
  msg: string;
  ct: string;
  tag: string;
  result: WycheproofResult;
}
interface AeadGroup {
  keySize: number;
  ivSize: number;
  tagSize: number;
  tests: AeadCase[];
}

// The native addon (the data path's AES-GCM) runs the AES-GCM file; it implements no ChaCha20-Poly1305.
const native = nativeAvailable() ? [nativeAeadProvider] : [];
const FILES: Array<[string, (keySize: number) => AeadAlgorithm, AeadProvider[]]> = [
  [
    'wycheproof/aes_gcm_test.json',
    (keySize) => `aes-${keySize}-gcm` as AeadAlgorithm,
    [nodeAeadProvider, nobleAeadProvider, ...native],
  ],
  ['wycheproof/chacha20_poly1305_test.json', () => 'chacha20-poly1305', [nodeAeadProvider, nobleAeadProvider]],
];
const tally = new VectorTally();
afterAll(() => console.log(tally.report()));

/** Seal and open; an exception or a null open counts as rejection. */
function run(provider: AeadProvider, algorithm: AeadAlgorithm, c: AeadCase) {
  const key = new SecretKey(hexToBytes(c.key));
  const [iv, aad, msg, ct, tag] = [c.iv, c.aad, c.msg, c.ct, c.tag].map(hexToBytes) as Uint8Array[];
  const errors: unknown[] = [];
  let sealed: string | undefined;
  let opened: string | null | undefined;
  try {
    sealed = bytesToHex(provider.create(algorithm, key).seal(iv!, msg!, aad!));
  } catch (err) {
    errors.push(err);
  }
  try {
    const out = provider.create(algorithm, key).open(iv!, concatBytes(ct!, tag!), aad!);
    opened = out && bytesToHex(out);
  } catch (err) {
    errors.push(err);
  }
  return { sealed, opened, errors, ivLength: iv!.length };
}

/** GCM IV lengths outside what the library takes (veil uses only 12 bytes). */
function outsideRange(provider: AeadProvider, algorithm: AeadAlgorithm, ivLength: number): boolean {
  const { min, max } = provider.gcmNonceLengths;
  return algorithm !== 'chacha20-poly1305' && ivLength > 0 && (ivLength < min || ivLength > max);
}

for (const [file, algorithmFor, providers] of FILES) {
  const vectors = loadVectors<WycheproofFile<AeadGroup>>(file);
  for (const provider of providers) {
    describe(`${file} [${provider.name}]`, () => {
      for (const group of vectors.testGroups) {
        for (const c of group.tests) {
          it(`${file} #${c.tcId} ${c.result} ${c.comment} [${provider.name}]`, () => {
            expect(group.tagSize).toBe(AEAD_TAG_LENGTH * 8);
            const algorithm = algorithmFor(group.keySize);
            const { sealed, opened, errors, ivLength } = run(provider, algorithm, c);
            if (c.result === 'valid' && outsideRange(provider, algorithm, ivLength)) {
              // A valid IV length the library cannot take: it must refuse with a clear error, never compute something else.
              tally.add(file, `${provider.name} (refused: IV length unsupported by the library)`);
              expect(errors).toHaveLength(2);
              for (const err of errors) expect(err).toBeInstanceOf(AeadInputError);
              return;
            }
            tally.add(file, provider.name);
            expect(errors.every((e) => e instanceof AeadInputError)).toBe(true);
            if (c.result === 'valid') {
              expect(sealed).toBe(c.ct + c.tag);
              expect(opened).toBe(c.msg);
            } else {
              // Invalid: a modified tag or an unusable nonce must not open.
              expect(opened ?? null).toBeNull();
              if (sealed !== undefined) expect(sealed).not.toBe(c.ct + c.tag);
            }
          });
        }
      }
    });
  }
}
