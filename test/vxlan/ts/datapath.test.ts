import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { nodeAeadProvider } from '../../../src/crypto/aead-node.js';
import { bytesToHex } from '../../../src/crypto/bytes.js';
import { SecretKey } from '../../../src/crypto/secret.js';
import { TsDataPath } from '../../../src/vxlan/ts/datapath.js';
import type { SaKeySpec } from '../../../src/vxlan/datapath.js';
import type { UnderlayIo, VtepIo } from '../../../src/vxlan/ts/io.js';
import { vxlanDatagram } from '../../support/esp-fixtures.js';

const VTEP = '169.254.1.2';
/** I/O fakes: the test drives the Forwarder directly and collects what would be sent. */
const underlay: UnderlayIo = { open: async () => {}, send: () => true, close: async () => {} };
const vtep: VtepIo = {
  open: async () => {},
  addPeer: async () => {},
  removePeer: async () => {},
  deliver: () => true,
  close: async () => {},
};

function spec(keymat: SecretKey, epoch = 1): SaKeySpec {
  return { spi: 0x4001_0001, keymat, esn: true, vni: 100, peerId: 'b', epoch };
}

describe('TsDataPath installs SAs idempotently', () => {
  const path = () => {
    const p = new TsDataPath({ vtepAddress: VTEP, underlay, vtep, provider: nodeAeadProvider });
    p.setNetwork({ vni: 100, encrypted: true });
    p.forwarder.setPeer({ id: 'b', address: '198.18.0.2' });
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
