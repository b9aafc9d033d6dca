import { inspect } from 'node:util';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { nobleAeadProvider } from '../../src/crypto/aead-noble.js';
import { nodeAeadProvider } from '../../src/crypto/aead-node.js';
import { bytesToHex } from '../../src/crypto/bytes.js';
import { nobleHkdf, nodeHkdf } from '../../src/crypto/hkdf.js';
import { KeyWrapError, unwrapSecret, wrapSecret, type KeyWrapDeps } from '../../src/crypto/keywrap.js';
import { SecretKey } from '../../src/crypto/secret.js';
import { generateX25519KeyPair, nobleX25519, nodeX25519 } from '../../src/crypto/x25519.js';

describe('SecretKey', () => {
  const key = new SecretKey(Uint8Array.from({ length: 32 }, (_, i) => i + 0xa0));
  const hex = bytesToHex(key.exposeDanger());

  it('never prints its bytes: String, JSON, util.inspect, template literals, nested objects', () => {
    for (const text of [String(key), JSON.stringify({ key }), inspect(key), inspect({ nested: { key } }), `${key}`]) {
      expect(text).toContain('<redacted>');
      expect(text).not.toContain(hex.slice(0, 8));
      expect(text).not.toMatch(/160|a0a1/); // neither decimal nor hex renderings of the first byte
    }
  });

  it('copies its input, compares in constant time and can be wiped', () => {
    const raw = randomBytes(16);
    const a = new SecretKey(raw);
    raw.fill(0);
    expect(bytesToHex(a.exposeDanger())).not.toBe('00'.repeat(16));
    const b = new SecretKey(a.exposeDanger());
    expect(a.equals(b)).toBe(true);
    b.wipe();
    expect(a.equals(b)).toBe(false);
  });
});

const IMPLEMENTATIONS: KeyWrapDeps[] = [
  { aead: nodeAeadProvider, x25519: nodeX25519, hkdf: nodeHkdf },
  { aead: nobleAeadProvider, x25519: nobleX25519, hkdf: nobleHkdf },
];

describe('key wrap (X25519 ephemeral-static, HKDF-SHA256, ChaCha20-Poly1305)', () => {
  const host = generateX25519KeyPair();
  const other = generateX25519KeyPair();
  const secret = new SecretKey(randomBytes(32));
  const ctx = { networkId: 'net-1', epoch: 7, hostId: 'host-a' };

  it('round-trips, and a wrap made by one implementation unwraps with the other', () => {
    for (const sealer of IMPLEMENTATIONS) {
      for (const opener of IMPLEMENTATIONS) {
        const wrapped = wrapSecret(secret, host.publicKey, ctx, sealer);
        expect(unwrapSecret(wrapped, host.privateKey, ctx, opener)?.equals(secret)).toBe(true);
      }
    }
  });

  it('binds network, epoch and host: a wrap copied to another context does not open', () => {
    const wrapped = wrapSecret(secret, host.publicKey, ctx);
    for (const moved of [
      { ...ctx, networkId: 'net-2' },
      { ...ctx, epoch: 8 },
      { ...ctx, hostId: 'host-b' },
    ]) {
      expect(unwrapSecret(wrapped, host.privateKey, moved)).toBeNull();
    }
  });

  it('only the addressed host can unwrap; tampering and truncation are rejected', () => {
    const wrapped = wrapSecret(secret, host.publicKey, ctx);
    expect(unwrapSecret(wrapped, other.privateKey, ctx)).toBeNull();
    for (let i = 0; i < wrapped.length; i++) {
      const bad = Uint8Array.from(wrapped);
      bad[i]! ^= 0x01;
      expect(unwrapSecret(bad, host.privateKey, ctx)).toBeNull();
    }
    for (const n of [0, 1, 33, 48, wrapped.length - 1])
      expect(unwrapSecret(wrapped.subarray(0, n), host.privateKey, ctx)).toBeNull();
  });

  it('draws a fresh ephemeral key per wrap and never contains the secret', () => {
    const a = wrapSecret(secret, host.publicKey, ctx);
    const b = wrapSecret(secret, host.publicKey, ctx);
    expect(bytesToHex(a)).not.toBe(bytesToHex(b));
    expect(bytesToHex(a)).not.toContain(bytesToHex(secret.exposeDanger()));
  });

  it('refuses a low-order recipient key', () => {
    expect(() => wrapSecret(secret, new Uint8Array(32), ctx)).toThrow(KeyWrapError);
  });
});
