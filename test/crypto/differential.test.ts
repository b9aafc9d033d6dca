import { randomBytes, randomInt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AEAD_KEY_LENGTH, type AeadAlgorithm } from '../../src/crypto/aead.js';
import { nobleAeadProvider } from '../../src/crypto/aead-noble.js';
import { nodeAeadProvider } from '../../src/crypto/aead-node.js';
import { bytesToHex } from '../../src/crypto/bytes.js';
import { nobleHkdf, nodeHkdf } from '../../src/crypto/hkdf.js';
import { SecretKey } from '../../src/crypto/secret.js';
import { nobleX25519, nodeX25519 } from '../../src/crypto/x25519.js';

// Random inputs, one implementation against the other: catches what fixed vectors miss.
const ROUNDS = 300;
const PAIRS = [
  [nodeAeadProvider, nobleAeadProvider],
  [nobleAeadProvider, nodeAeadProvider],
] as const;
const ALGORITHMS: AeadAlgorithm[] = ['aes-128-gcm', 'aes-192-gcm', 'aes-256-gcm', 'chacha20-poly1305'];

describe('differential AEAD', () => {
  for (const algorithm of ALGORITHMS) {
    for (const [sealer, opener] of PAIRS) {
      it(`${algorithm}: ${ROUNDS} random messages sealed by ${sealer.name} open with ${opener.name}`, () => {
        for (let i = 0; i < ROUNDS; i++) {
          const key = new SecretKey(randomBytes(AEAD_KEY_LENGTH[algorithm]));
          const nonce = randomBytes(12);
          const aad = randomBytes(randomInt(0, 24));
          const msg = randomBytes(randomInt(0, 1600));
          const sealed = sealer.create(algorithm, key).seal(nonce, msg, aad);
          expect(bytesToHex(opener.create(algorithm, key).seal(nonce, msg, aad))).toBe(bytesToHex(sealed));
          const opened = opener.create(algorithm, key).open(nonce, sealed, aad);
          expect(opened && bytesToHex(opened)).toBe(bytesToHex(msg));
          sealed[randomInt(0, sealed.length)]! ^= 1 << randomInt(0, 8);
          expect(opener.create(algorithm, key).open(nonce, sealed, aad)).toBeNull();
        }
      });
    }
  }
});

describe('differential X25519 and HKDF', () => {
  it(`${ROUNDS} random key pairs agree between node:crypto and noble`, () => {
    for (let i = 0; i < ROUNDS; i++) {
      const a = new SecretKey(randomBytes(32));
      const b = new SecretKey(randomBytes(32));
      const pubA = nobleX25519.publicKey(a);
      expect(bytesToHex(nodeX25519.publicKey(a))).toBe(bytesToHex(pubA));
      const ab = nodeX25519.sharedSecret(b, pubA)!;
      expect(ab.equals(nobleX25519.sharedSecret(a, nobleX25519.publicKey(b))!)).toBe(true);
    }
  });

  it(`${ROUNDS} node:crypto key pairs (OpenSSL's generator, decoded once) agree with noble; a wiped key is refused`, () => {
    for (let i = 0; i < ROUNDS; i++) {
      const a = nodeX25519.generateKeyPair!();
      const b = new SecretKey(randomBytes(32));
      expect(bytesToHex(nobleX25519.publicKey(a.privateKey))).toBe(bytesToHex(a.publicKey));
      // The same SecretKey twice: the second use is served from the decoded key, and still agrees.
      for (let n = 0; n < 2; n++)
        expect(
          nodeX25519
            .sharedSecret(a.privateKey, nobleX25519.publicKey(b))!
            .equals(nobleX25519.sharedSecret(b, a.publicKey)!),
        ).toBe(true);
    }
    const k = nodeX25519.generateKeyPair!().privateKey;
    k.wipe();
    expect(() => nodeX25519.publicKey(k)).toThrow(/wiped/);
    expect(() => nodeX25519.sharedSecret(k, new Uint8Array(32).fill(9))).toThrow(/wiped/);
  });

  it(`${ROUNDS} random HKDF derivations agree`, () => {
    for (let i = 0; i < ROUNDS; i++) {
      const [ikm, salt, info] = [
        randomBytes(randomInt(0, 80)),
        randomBytes(randomInt(0, 80)),
        randomBytes(randomInt(0, 80)),
      ];
      const len = randomInt(0, 600);
      expect(bytesToHex(nodeHkdf.derive(ikm, salt, info, len))).toBe(
        bytesToHex(nobleHkdf.derive(ikm, salt, info, len)),
      );
    }
  });
});
