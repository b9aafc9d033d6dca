import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { bytesToHex } from '../../src/crypto/bytes.js';
import { nobleHkdf, nodeHkdf } from '../../src/crypto/hkdf.js';
import { deriveSaKeymat, SA_KEYMAT_LENGTH, SaKeyError, type SaKeyContext } from '../../src/crypto/sa-keys.js';
import { SecretKey } from '../../src/crypto/secret.js';
import { generateX25519KeyPair, nobleX25519, nodeX25519 } from '../../src/crypto/x25519.js';
import { documentedKeymat } from '../support/documented-keymat.js';

const epochSecret = new SecretKey(randomBytes(32));
const [a, b, c] = [generateX25519KeyPair(), generateX25519KeyPair(), generateX25519KeyPair()];
const ctx: SaKeyContext = {
  networkId: 'n1',
  vni: 4096,
  networkIndex: 1,
  epoch: 3,
  senderId: 'a',
  receiverId: 'b',
  senderIncarnation: 'inc-a-1',
  receiverIncarnation: 'inc-b-1',
};
const hex = (k: SecretKey) => bytesToHex(k.exposeDanger());

describe('SA KEYMAT derivation (docs/keys.md "SA keys")', () => {
  it('sender and receiver derive the same 20-byte KEYMAT, on either implementation', () => {
    const bySender = deriveSaKeymat(epochSecret, a.privateKey, b.publicKey, ctx);
    const byReceiver = deriveSaKeymat(epochSecret, b.privateKey, a.publicKey, ctx, {
      x25519: nodeX25519,
      hkdf: nodeHkdf,
    });
    const reference = deriveSaKeymat(epochSecret, b.privateKey, a.publicKey, ctx, {
      x25519: nobleX25519,
      hkdf: nobleHkdf,
    });
    expect(bySender.length).toBe(SA_KEYMAT_LENGTH);
    expect(hex(byReceiver)).toBe(hex(bySender));
    expect(hex(reference)).toBe(hex(bySender));
  });

  it('(1) keys are per direction and per pair', () => {
    const ab = hex(deriveSaKeymat(epochSecret, a.privateKey, b.publicKey, ctx));
    const ba = hex(
      deriveSaKeymat(epochSecret, b.privateKey, a.publicKey, {
        ...ctx,
        senderId: 'b',
        receiverId: 'a',
        senderIncarnation: 'inc-b-1',
        receiverIncarnation: 'inc-a-1',
      }),
    );
    const ac = hex(deriveSaKeymat(epochSecret, a.privateKey, c.publicKey, { ...ctx, receiverId: 'c' }));
    expect(new Set([ab, ba, ac]).size).toBe(3);
  });

  it('(2) a third member that knows the epoch secret cannot derive the keys between two others', () => {
    const ab = hex(deriveSaKeymat(epochSecret, a.privateKey, b.publicKey, ctx));
    // c holds the epoch secret and both public keys, but no private key of a or b.
    const guesses = [
      deriveSaKeymat(epochSecret, c.privateKey, a.publicKey, ctx),
      deriveSaKeymat(epochSecret, c.privateKey, b.publicKey, ctx),
    ].map(hex);
    expect(guesses).not.toContain(ab);
  });

  it('(3) a new incarnation of the sender gives a new key', () => {
    const first = hex(deriveSaKeymat(epochSecret, a.privateKey, b.publicKey, ctx));
    const restarted = hex(
      deriveSaKeymat(epochSecret, a.privateKey, b.publicKey, { ...ctx, senderIncarnation: 'inc-a-2' }),
    );
    expect(restarted).not.toBe(first);
  });

  it('(4) a new incarnation of the receiver gives a new key too: nothing recorded before its restart replays into its fresh window', () => {
    const first = hex(deriveSaKeymat(epochSecret, a.privateKey, b.publicKey, ctx));
    const receiverRestarted = hex(
      deriveSaKeymat(epochSecret, b.privateKey, a.publicKey, { ...ctx, receiverIncarnation: 'inc-b-2' }),
    );
    expect(receiverRestarted).not.toBe(first);
  });

  it('network, epoch and epoch secret each change the key', () => {
    const base = hex(deriveSaKeymat(epochSecret, a.privateKey, b.publicKey, ctx));
    expect(hex(deriveSaKeymat(epochSecret, a.privateKey, b.publicKey, { ...ctx, networkId: 'n2' }))).not.toBe(base);
    // Two networks named alike (a copied configuration block with only vni and index changed) still differ.
    expect(hex(deriveSaKeymat(epochSecret, a.privateKey, b.publicKey, { ...ctx, vni: 4097 }))).not.toBe(base);
    expect(hex(deriveSaKeymat(epochSecret, a.privateKey, b.publicKey, { ...ctx, networkIndex: 2 }))).not.toBe(base);
    expect(hex(deriveSaKeymat(epochSecret, a.privateKey, b.publicKey, { ...ctx, epoch: 4 }))).not.toBe(base);
    expect(hex(deriveSaKeymat(new SecretKey(randomBytes(32)), a.privateKey, b.publicKey, ctx))).not.toBe(base);
  });

  it('is the formula of docs/keys.md, written out again with node:crypto alone', () => {
    for (let i = 0; i < 20; i++) {
      const secret = randomBytes(32);
      const [s, r] = [generateX25519KeyPair(), generateX25519KeyPair()];
      const c: SaKeyContext = {
        networkId: randomBytes(8).toString('hex'),
        vni: 4096 + i * 977,
        networkIndex: i * 3000,
        epoch: 1 + i * 12345,
        senderId: `s${i}`,
        receiverId: `r-é${i}`,
        senderIncarnation: randomBytes(8).toString('hex'),
        receiverIncarnation: randomBytes(8).toString('hex'),
      };
      const documented = documentedKeymat(secret, r.privateKey.exposeDanger(), s.publicKey, {
        networkId: c.networkId,
        vni: c.vni,
        networkIndex: c.networkIndex,
        epoch: c.epoch,
        sender: c.senderId,
        receiver: c.receiverId,
        senderIncarnation: c.senderIncarnation,
        receiverIncarnation: c.receiverIncarnation,
      });
      expect(hex(deriveSaKeymat(new SecretKey(secret), s.privateKey, r.publicKey, c))).toBe(documented.toString('hex'));
    }
  });

  it('refuses a low-order peer key', () => {
    expect(() => deriveSaKeymat(epochSecret, a.privateKey, new Uint8Array(32), ctx)).toThrow(SaKeyError);
  });
});
