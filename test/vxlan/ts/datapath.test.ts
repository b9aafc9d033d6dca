import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { nodeAeadProvider } from '../../../src/crypto/aead-node.js';
import { bytesToHex } from '../../../src/crypto/bytes.js';
import { SecretKey } from '../../../src/crypto/secret.js';
import { TsDataPath } from '../../../src/vxlan/ts/datapath.js';
import type { SaKeySpec } from '../../../src/vxlan/datapath.js';
import { nullUnderlay, nullVtep } from '../../support/data-paths.js';
import { vxlanDatagram } from '../../support/esp-fixtures.js';

const VTEP = '169.254.1.2';
/** I/O that goes nowhere: the test drives the Forwarder directly and collects what would be sent. */
const underlay = nullUnderlay;
const vtep = nullVtep;

/** A data path with encrypted network 100 and peer b. */
function withPeerB(): TsDataPath {
  const p = new TsDataPath({ vtepAddress: VTEP, peerNet: '169.254.64.0', underlay, vtep, provider: nodeAeadProvider });
  p.setNetwork({ vni: 100, encrypted: true });
  p.forwarder.setPeer({ id: 'b', address: '198.18.0.2' });
  return p;
}

function spec(keymat: SecretKey, epoch = 1): SaKeySpec {
  return { spi: 0x4001_0001, keymat, esn: true, vni: 100, peerId: 'b', epoch };
}

describe('TsDataPath installs SAs idempotently', () => {
  const path = () => {
    const p = withPeerB();
    return p;
  };
  const ivOf = (p: TsDataPath) => {
    const r = p.forwarder.outbound('b', vxlanDatagram(100), VTEP, 1);
    if (!r.ok || r.to !== 'underlay') throw new Error('seal failed');
    return bytesToHex(r.datagram.subarray(8, 16));
  };

  it('activating the same outbound SA again keeps its sequence: no GCM nonce is used twice', () => {
    const p = path();
    const keymat = new SecretKey(randomBytes(20));
    p.activateOutbound(spec(keymat));
    const first = ivOf(p);
    p.activateOutbound(spec(new SecretKey(keymat.exposeDanger())));
    expect(ivOf(p)).not.toBe(first);
    expect(p.forwarder.sas.outbound('b', 100)?.counter.used).toBe(2);
  });

  it('a new key under the same SPI and epoch (a new incarnation) replaces the SA', () => {
    const p = path();
    p.activateOutbound(spec(new SecretKey(randomBytes(20))));
    ivOf(p);
    p.activateOutbound(spec(new SecretKey(randomBytes(20))));
    expect(p.forwarder.sas.outbound('b', 100)?.counter.used).toBe(0);
  });

  it('installing the same inbound SA again keeps its replay window', () => {
    const p = path();
    const keymat = new SecretKey(randomBytes(20));
    p.installInbound(spec(keymat));
    const sa = p.forwarder.sas.inbound(0x4001_0001)!;
    expect(sa.replay.update(0, 5)).toBe(true);
    p.installInbound(spec(new SecretKey(keymat.exposeDanger())));
    expect(p.forwarder.sas.inbound(0x4001_0001)).toBe(sa);
    expect(sa.replay.check(5)).toBeLessThan(0);
  });
});

describe('TsDataPath never restarts a counter under a used key (the rules of native/satable.c)', () => {
  const path = () => {
    const p = withPeerB();
    p.forwarder.setPeer({ id: 'c', address: '198.18.0.3' });
    return p;
  };
  const key = () => new SecretKey(randomBytes(20));
  const at = (epoch: number, keymat: SecretKey, peerId = 'b', changes: Partial<SaKeySpec> = {}): SaKeySpec => ({
    spi: 0x1000 + epoch,
    keymat,
    esn: true,
    vni: 100,
    peerId,
    epoch,
    ...changes,
  });
  const codeOf = (f: () => void) => {
    try {
      f();
      return undefined;
    } catch (err) {
      return (err as { code?: string }).code;
    }
  };
  const seal = (p: TsDataPath, peerId = 'b') => {
    const r = p.forwarder.outbound(peerId, vxlanDatagram(100), VTEP, 1);
    if (!r.ok || r.to !== 'underlay') throw new Error('seal failed');
    return new DataView(r.datagram.buffer, r.datagram.byteOffset).getUint32(4);
  };

  it('an epoch more than two behind the pair’s mark is refused in both directions, across a peer removal', async () => {
    const p = path();
    const keys = [1, 2, 3, 4].map(() => key());
    p.activateOutbound(at(1, keys[0]!));
    expect([seal(p), seal(p)]).toEqual([1, 2]);
    for (const e of [2, 3, 4]) p.activateOutbound(at(e, keys[e - 1]!));
    expect(codeOf(() => p.activateOutbound(at(1, keys[0]!)))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    expect(codeOf(() => p.installInbound(at(1, keys[0]!)))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    p.activateOutbound(at(2, keys[1]!));
    expect(seal(p)).toBe(1);
    await p.removePeer('b');
    await p.addPeer({ id: 'b', index: 2, address: '198.18.0.2' });
    expect(codeOf(() => p.activateOutbound(at(1, keys[0]!)))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    p.activateOutbound(at(2, keys[1]!));
    expect(seal(p)).toBe(2);
  });

  it('the same key under another SPI, ESN setting or epoch is refused, in service or retired', () => {
    const p = path();
    const k = key();
    p.activateOutbound(at(7, k));
    p.installInbound(at(7, k, 'c'));
    for (const changes of [{ spi: 0x2000 }, { esn: false }, { epoch: 8 }]) {
      expect(codeOf(() => p.activateOutbound(at(7, k, 'b', changes)))).toBe('VEIL_ERR_SA_KEY_REUSED');
      expect(codeOf(() => p.installInbound(at(7, k, 'c', changes)))).toBe('VEIL_ERR_SA_KEY_REUSED');
    }
    p.removeOutbound('b', 100);
    expect(codeOf(() => p.activateOutbound(at(7, k, 'b', { esn: false })))).toBe('VEIL_ERR_SA_KEY_REUSED');
  });

  it('a new key under the same name retires the old SA: the old key back resumes its counter', () => {
    const p = path();
    const old = key();
    p.activateOutbound(at(5, old));
    expect([seal(p), seal(p)]).toEqual([1, 2]);
    p.activateOutbound(at(5, key()));
    expect(seal(p)).toBe(1);
    p.activateOutbound(at(5, old));
    expect(seal(p)).toBe(3);
  });

  it('epoch marks are the network’s: an epoch more than two behind the newest of any peer of the network is refused', () => {
    const p = path();
    for (const e of [1, 2, 3, 4]) p.activateOutbound(at(e, key()));
    expect(codeOf(() => p.activateOutbound(at(1, key(), 'c')))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    expect(codeOf(() => p.installInbound(at(1, key(), 'c')))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    p.activateOutbound(at(2, key(), 'c'));
  });

  it('one key, one place: under another network it is refused; under its name for another peer it moves there, counter or window and all', () => {
    const p = path();
    p.setNetwork({ vni: 200, encrypted: true });
    const k = key();
    const kIn = key();
    p.activateOutbound(at(3, k));
    p.installInbound(at(3, kIn));
    expect(seal(p)).toBe(1);
    for (const changes of [{ vni: 200 }, { vni: 200, peerId: 'c' }]) {
      expect(codeOf(() => p.activateOutbound(at(3, k, 'b', changes)))).toBe('VEIL_ERR_SA_KEY_REUSED');
      expect(codeOf(() => p.installInbound(at(3, kIn, 'b', changes)))).toBe('VEIL_ERR_SA_KEY_REUSED');
    }
    p.activateOutbound(at(3, k, 'c'));
    expect(p.forwarder.sas.outbound('b', 100)).toBeUndefined();
    expect(seal(p, 'c')).toBe(2);
    const sa = p.forwarder.sas.inbound(0x1003)!;
    expect(sa.replay.update(0, 5)).toBe(true);
    p.installInbound(at(3, kIn, 'c'));
    expect(p.forwarder.sas.inbound(0x1003)).toBe(sa);
    expect(sa.label.peerId).toBe('c');
    expect(p.forwarder.sas.inboundOf('b', 100)).toEqual([]);
    expect(sa.replay.check(5)).toBeLessThan(0);
  });

  it('a peer renumbered (same id and keys, another host index): its outbound SA resumes, its inbound key under the new SPI is refused', async () => {
    const p = path();
    const out = key();
    const inb = key();
    p.activateOutbound(at(1, out));
    p.installInbound(at(1, inb));
    expect(seal(p)).toBe(1);
    await p.removePeer('b');
    await p.addPeer({ id: 'b', index: 9, address: '198.18.0.2' });
    p.activateOutbound(at(1, out));
    expect(seal(p)).toBe(2);
    expect(codeOf(() => p.installInbound(at(1, inb, 'b', { spi: 0x9001 })))).toBe('VEIL_ERR_SA_KEY_REUSED');
  });

  it('a removed peer’s retired SAs go once another pair is three epochs further; a removed network takes all of its own', async () => {
    const p = path();
    const theirs = key();
    p.activateOutbound(at(1, theirs, 'c'));
    await p.removePeer('c');
    for (const e of [2, 3, 4]) p.activateOutbound(at(e, key()));
    await p.addPeer({ id: 'c', index: 3, address: '198.18.0.3' });
    expect(codeOf(() => p.activateOutbound(at(1, theirs, 'c')))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    // A network created again under the VNI starts at epoch 1, with new keys.
    p.removeNetwork(100);
    p.setNetwork({ vni: 100, encrypted: true });
    p.activateOutbound(at(1, key()));
    expect(seal(p)).toBe(1);
  });
});
