import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { nodeAeadProvider } from '../../../src/crypto/aead-node.js';
import { bytesToHex } from '../../../src/crypto/bytes.js';
import { SecretKey } from '../../../src/crypto/secret.js';
import { generateX25519KeyPair } from '../../../src/crypto/x25519.js';
import { Forwarder } from '../../../src/vxlan/ts/forwarder.js';
import { deriveSaPair, type SaHost } from '../../../src/vxlan/sa/derive.js';
import { MAX_LIVE_EPOCHS, SaTableError } from '../../../src/vxlan/sa/table.js';
import { vxlanDatagram } from '../../support/esp-fixtures.js';

const VTEP_A = '169.254.1.2';
const VTEP_B = '169.254.2.2';

function host(id: string, index: number) {
  const keys = generateX25519KeyPair();
  const info: SaHost = { id, index, publicKey: keys.publicKey, incarnation: randomBytes(8).toString('hex') };
  return { info, privateKey: keys.privateKey };
}

/** Two forwarders (hosts a and b) sharing an encrypted network 100 and a plain network 200. */
function twoHosts(epochs = [1]) {
  const a = host('a', 1);
  const b = host('b', 2);
  const fa = new Forwarder(VTEP_A);
  const fb = new Forwarder(VTEP_B);
  for (const f of [fa, fb]) {
    f.setNetwork({ vni: 100, encrypted: true });
    f.setNetwork({ vni: 200, encrypted: false });
  }
  fa.setPeer({ id: 'b', address: '198.18.0.2' });
  fb.setPeer({ id: 'a', address: '198.18.0.1' });
  const secret = new SecretKey(randomBytes(32));
  for (const epoch of epochs) {
    const net = { networkId: 'n100', networkIndex: 7, vni: 100, epoch, secret };
    const ab = deriveSaPair(a.info, a.privateKey, b.info, net, { provider: nodeAeadProvider });
    const ba = deriveSaPair(b.info, b.privateKey, a.info, net, { provider: nodeAeadProvider });
    fa.sas.installInbound(ab.inbound);
    fb.sas.installInbound(ba.inbound);
    fa.sas.activateOutbound(ab.outbound);
    fb.sas.activateOutbound(ba.outbound);
  }
  return { fa, fb };
}

describe('Forwarder', () => {
  it('encrypted: a → seal → UDP 4500 → b → open → VTEP, byte for byte, counted on both pairs', () => {
    const { fa, fb } = twoHosts();
    const vxlan = vxlanDatagram(100);
    const out = fa.outbound('b', vxlan, VTEP_A, 40000);
    expect(out).toMatchObject({ ok: true, to: 'underlay', address: '198.18.0.2', port: 4500 });
    if (!out.ok || out.to !== 'underlay') return;
    expect(bytesToHex(out.datagram)).not.toContain(bytesToHex(vxlan.subarray(8, 40)));
    const back = fb.inboundEsp(out.datagram);
    expect(back.ok && back.to === 'vtep' && bytesToHex(back.datagram)).toBe(bytesToHex(vxlan));
    expect(fa.stats.pair('b', 100).txPackets).toBe(1);
    expect(fb.stats.pair('a', 100).rxPackets).toBe(1);
  });

  it('plain: forwarded unchanged to peer:4789 and accepted back from a known peer only', () => {
    const { fa, fb } = twoHosts();
    const vxlan = vxlanDatagram(200);
    const out = fa.outbound('b', vxlan, VTEP_A, 40000);
    expect(out).toMatchObject({ ok: true, to: 'underlay', port: 4789, datagram: vxlan });
    expect(fb.inboundPlain(vxlan, '198.18.0.1')).toMatchObject({ ok: true, to: 'vtep', datagram: vxlan });
    expect(fb.inboundPlain(vxlan, '198.18.0.9')).toEqual({ ok: false, drop: 'unknown-peer' });
  });

  it('removing or moving a peer leaves its old address to the peer that holds it now', () => {
    const f = new Forwarder(VTEP_A);
    f.setNetwork({ vni: 200, encrypted: false });
    const vxlan = vxlanDatagram(200);
    const from = (address: string) => {
      const r = f.inboundPlain(vxlan, address);
      return r.ok ? f.stats.pair('new', 200).rxPackets : r;
    };
    // A peer cut off from etcd, still kept, and a new host on its address.
    f.setPeer({ id: 'old', address: '198.18.0.5' });
    f.setPeer({ id: 'new', address: '198.18.0.5' });
    f.removePeer('old');
    expect(from('198.18.0.5')).toBe(1);
    f.setPeer({ id: 'old', address: '198.18.0.6' });
    f.setPeer({ id: 'new', address: '198.18.0.6' });
    f.setPeer({ id: 'old', address: '198.18.0.7' });
    expect(from('198.18.0.6')).toBe(2);
  });

  it('refuses plain VXLAN that claims an encrypted network (downgrade)', () => {
    const { fb } = twoHosts();
    expect(fb.inboundPlain(vxlanDatagram(100), '198.18.0.1')).toEqual({ ok: false, drop: 'plaintext-on-encrypted' });
    expect(fb.stats.pair('a', 100).drops.get('plaintext-on-encrypted')).toBe(1);
  });

  it('fails closed: encrypted network without an outbound SA drops, never forwards plain', () => {
    const { fa } = twoHosts();
    fa.sas.removeOutbound('b', 100);
    expect(fa.outbound('b', vxlanDatagram(100), VTEP_A, 1)).toEqual({ ok: false, drop: 'no-outbound-sa' });
    expect(fa.stats.pair('b', 100).drops.get('no-outbound-sa')).toBe(1);
  });

  it('accepts VTEP-side datagrams only from the local VTEP address, for known peers and VNIs', () => {
    const { fa } = twoHosts();
    expect(fa.outbound('b', vxlanDatagram(100), '169.254.1.1', 1)).toEqual({ ok: false, drop: 'unauthorized-source' });
    expect(fa.outbound('zz', vxlanDatagram(100), VTEP_A, 1)).toEqual({ ok: false, drop: 'unknown-peer' });
    expect(fa.outbound('b', vxlanDatagram(300), VTEP_A, 1)).toEqual({ ok: false, drop: 'unknown-vni' });
    expect(fa.stats.unattributed.get('unauthorized-source')).toBe(1);
  });

  it('several live epochs: inbound accepts each, outbound uses the one activated', () => {
    const { fa, fb } = twoHosts([1, 2]);
    const out = fa.outbound('b', vxlanDatagram(100), VTEP_A, 1);
    if (!out.ok || out.to !== 'underlay') throw new Error('seal failed');
    expect(fa.sas.outbound('b', 100)?.label.epoch).toBe(2);
    expect(fb.inboundEsp(out.datagram).ok).toBe(true);
    expect(fb.sas.inboundOf('a', 100).map((sa) => sa.label.epoch)).toEqual([1, 2]);
  });
});

describe('SaTable', () => {
  it('holds at most three live epochs per (peer, network) and refuses a reused SPI', () => {
    const a = host('a', 1);
    const b = host('b', 2);
    const f = new Forwarder(VTEP_A);
    const secret = new SecretKey(randomBytes(32));
    const pair = (epoch: number) =>
      deriveSaPair(
        a.info,
        a.privateKey,
        b.info,
        { networkId: 'n', networkIndex: 1, vni: 5, epoch, secret },
        { provider: nodeAeadProvider },
      );
    for (let e = 1; e <= MAX_LIVE_EPOCHS; e++) f.sas.installInbound(pair(e).inbound);
    expect(() => f.sas.installInbound(pair(4).inbound)).toThrow(SaTableError);
    f.sas.retireInbound('b', 5, 1);
    // epoch 5 has the SPI of epoch 1 (mod 4), which is now free; epoch 6 collides with live epoch 2.
    f.sas.installInbound(pair(5).inbound);
    f.sas.retireInbound('b', 5, 3);
    expect(() => f.sas.installInbound(pair(6).inbound)).toThrow(/SPI 0x[0-9a-f]+ is in use/);
  });
});
