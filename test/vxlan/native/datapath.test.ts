// The native data plane's outbound path and its tables, through real sockets on loopback: sealing
// (opened by the TypeScript inbound path), GSO coalescing, the forwarder's decisions and drop names,
// the sequence budget, table changes while traffic flows, and status() in Gateway.status()'s shape.
import { randomInt } from 'node:crypto';
import type dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeAeadProvider } from '../../../src/crypto/aead-node.js';
import { bytesToHex } from '../../../src/crypto/bytes.js';
import { SecretKey } from '../../../src/crypto/secret.js';
import { createEspCipher } from '../../../src/vxlan/wire/esp.js';
import { processInbound } from '../../../src/vxlan/ts/inbound.js';
import { NativeDataPath } from '../../../src/vxlan/native/datapath.js';
import { InboundSa } from '../../../src/vxlan/sa/sa.js';
import { vxlanDatagram } from '../../support/esp-fixtures.js';
import { Prng } from '../../support/prng.js';
import { gatewayAddress } from '../../../src/model/peer-net.js';
import { loopbackPeerNet, TestSockets } from '../../support/udp.js';

const NET = `127.${100 + randomInt(100)}.${randomInt(250)}`;
const A = { underlay: `${NET}.11`, host: `${NET}.12`, vtep: `${NET}.13`, peer: `${NET}.14`, stranger: `${NET}.15` };
const PORTS = { esp: 25500, plain: 25789, vtep: 25790, peerEsp: 25501, peerPlain: 25791, gateway: 35003 };
const PEER = { id: 'h3', index: 3, address: A.peer };
/** The peer net on loopback: PEER's gateway address is its .3. */
const PEER_NET = loopbackPeerNet(NET);
const ENC = 4096;
const PLAIN = 4097;
const BARE = 4098; // encrypted, but no SA

let dp: NativeDataPath;
const testSockets = new TestSockets();
let vtep: dgram.Socket; // sends as the VTEP, receives deliveries
let peerEsp: dgram.Socket;
let peerPlain: dgram.Socket;
let stranger: dgram.Socket;
const atPeerEsp: Buffer[] = [];
const atPeerPlain: Buffer[] = [];
const keyOut = new SecretKey(new Prng(9).bytes(20));
const spiOut = 0x0003_0001;
const tsInbound = new InboundSa(createEspCipher(spiOut, keyOut, true, nodeAeadProvider), ENC);

const bind = (address: string, port: number) => testSockets.bind(address, port);
const send = (s: dgram.Socket, d: Uint8Array, port: number, address: string) =>
  new Promise<void>((resolve, reject) => s.send(d, port, address, (err) => (err ? reject(err) : resolve())));
async function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timeout waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
const pair = (vni: number) => dp.status().pairs.find((p) => p.peer === PEER.id && p.vni === vni)!;
const toGateway = (s: dgram.Socket, d: Uint8Array) => send(s, d, PORTS.gateway, gatewayAddress(PEER_NET, PEER.index));

beforeAll(async () => {
  dp = new NativeDataPath({
    underlayAddress: A.underlay,
    hostAddress: A.host,
    vtepAddress: A.vtep,
    peerNet: PEER_NET,
    ports: {
      esp: PORTS.esp,
      plain: PORTS.plain,
      vtep: PORTS.vtep,
      peerEsp: PORTS.peerEsp,
      peerPlain: PORTS.peerPlain,
      delivery: 0,
      gateway: PORTS.gateway,
    },
  });
  await dp.start();
  await dp.addPeer(PEER);
  dp.setNetwork({ vni: ENC, encrypted: true });
  dp.setNetwork({ vni: PLAIN, encrypted: false });
  dp.setNetwork({ vni: BARE, encrypted: true });
  dp.activateOutbound({ spi: spiOut, keymat: keyOut, esn: true, vni: ENC, peerId: PEER.id, epoch: 7 });
  vtep = await bind(A.vtep, PORTS.vtep);
  peerEsp = await bind(A.peer, PORTS.peerEsp);
  peerPlain = await bind(A.peer, PORTS.peerPlain);
  stranger = await bind(A.stranger, 0);
  peerEsp.on('message', (m) => atPeerEsp.push(m));
  peerPlain.on('message', (m) => atPeerPlain.push(m));
});

afterAll(async () => {
  await dp?.stop();
  testSockets.closeAll();
});

describe('native outbound', () => {
  it('seals VXLAN from the VTEP into ESP the TypeScript inbound path opens, in order, with coalesced (GSO) sends', async () => {
    const rng = new Prng(1);
    const sent: string[] = [];
    atPeerEsp.length = 0;
    const before = dp.stats().io.outbound;
    // Bursts of equal-size datagrams (what TCP through the VTEP produces), then a shorter one.
    for (let burst = 0; burst < 20; burst++) {
      const size = 60 + rng.int(1300);
      const pending: Promise<void>[] = [];
      for (let i = 0; i < 40; i++) {
        const d = vxlanDatagram(ENC, rng.bytes(i === 39 ? size - 10 : size));
        sent.push(bytesToHex(d));
        pending.push(toGateway(vtep, d));
      }
      await Promise.all(pending);
    }
    await until(() => atPeerEsp.length >= sent.length, `${sent.length} ESP datagrams at the peer`);
    const opened = atPeerEsp.map((m) => {
      const r = processInbound(new Uint8Array(m), { inbound: (spi) => (spi === spiOut ? tsInbound : undefined) });
      if (!r.ok) throw new Error(r.drop);
      return bytesToHex(r.vxlan);
    });
    expect(opened).toEqual(sent);
    const io = dp.stats().io.outbound;
    const packets = io.txPackets - before.txPackets;
    const messages = io.txMessages - before.txMessages;
    console.log(
      `native outbound: ${packets} packets in ${messages} messages, ${io.txCalls - before.txCalls} sendmmsg calls`,
    );
    expect(packets).toBe(sent.length);
    expect(messages).toBeLessThanOrEqual(packets);
    const p = pair(ENC);
    expect(p.txPackets).toBeGreaterThanOrEqual(sent.length);
    expect(p.outbound).toMatchObject({ spi: spiOut, epoch: 7 });
    expect(p.outbound!.sealed).toBe(p.txPackets);
    expect(p.outbound!.sequenceHeadroom).toBe(2 ** 53 - 1 - p.outbound!.sealed);
  });

  it('forwards plain networks unchanged to the peer on 4789', async () => {
    atPeerPlain.length = 0;
    const d = vxlanDatagram(PLAIN, new Prng(2).bytes(100));
    await toGateway(vtep, d);
    await until(() => atPeerPlain.length === 1, 'the plain datagram');
    expect(bytesToHex(atPeerPlain[0]!)).toBe(bytesToHex(d));
    expect(pair(PLAIN).txPackets).toBe(1);
  });

  it("drops by the forwarder's rules: unauthorized source, bad header, unknown VNI, no outbound SA (fail closed)", async () => {
    const before = dp.status();
    atPeerEsp.length = 0;
    atPeerPlain.length = 0;
    await toGateway(stranger, vxlanDatagram(ENC));
    await toGateway(stranger, vxlanDatagram(PLAIN));
    await toGateway(vtep, new Uint8Array(7));
    await toGateway(vtep, vxlanDatagram(999));
    await toGateway(vtep, vxlanDatagram(BARE));
    await until(
      () =>
        Object.values(dp.status().unattributedDrops).reduce((a, b) => a + b, 0) >=
          Object.values(before.unattributedDrops).reduce((a, b) => a + b, 0) + 4 &&
        (pair(BARE).drops['no-outbound-sa'] ?? 0) === 1,
      'the drops',
    );
    const u = dp.status().unattributedDrops;
    expect((u['unauthorized-source'] ?? 0) - (before.unattributedDrops['unauthorized-source'] ?? 0)).toBe(2);
    expect((u['bad-vxlan-header'] ?? 0) - (before.unattributedDrops['bad-vxlan-header'] ?? 0)).toBe(1);
    expect((u['unknown-vni'] ?? 0) - (before.unattributedDrops['unknown-vni'] ?? 0)).toBe(1);
    await new Promise((r) => setTimeout(r, 50));
    expect(atPeerEsp).toHaveLength(0);
    expect(atPeerPlain).toHaveLength(0);
  });

  it('stops at the sequence budget (seq-exhausted), and re-activating the same SA never restarts its counter', async () => {
    const key = new SecretKey(new Prng(3).bytes(20));
    const sa = { spi: 0x0003_0002, keymat: key, esn: true, vni: BARE, peerId: PEER.id, epoch: 1 };
    dp.activateOutbound(sa, 5);
    atPeerEsp.length = 0;
    for (let i = 0; i < 3; i++) await toGateway(vtep, vxlanDatagram(BARE));
    await until(() => atPeerEsp.length === 3, '3 sealed');
    dp.activateOutbound(sa, 5); // the same SA again: no nonce reuse
    for (let i = 0; i < 4; i++) await toGateway(vtep, vxlanDatagram(BARE));
    await until(() => (pair(BARE).drops['seq-exhausted'] ?? 0) === 2 && atPeerEsp.length >= 5, 'seq-exhausted');
    await new Promise((r) => setTimeout(r, 20));
    expect(atPeerEsp).toHaveLength(5);
    expect(atPeerEsp.map((m) => m.readUInt32BE(4))).toEqual([1, 2, 3, 4, 5]);
    expect(pair(BARE).outbound).toMatchObject({ sealed: 5, sequenceHeadroom: 0 });
    dp.removeOutbound(PEER.id, BARE);
    expect(pair(BARE).outbound).toBeUndefined();
  });
});

describe('native tables change while traffic flows', () => {
  it('installing and removing inbound SAs and peers under load never crashes and never delivers with a removed SA', async () => {
    const key = new SecretKey(new Prng(4).bytes(20));
    const spi = 0x0003_0003;
    const spec = { spi, keymat: key, esn: true, vni: ENC, peerId: PEER.id, epoch: 6 }; // within reach of epoch 7
    const { OutboundSa } = await import('../../../src/vxlan/sa/sa.js');
    const { sealOutbound } = await import('../../../src/vxlan/ts/outbound.js');
    const out = new OutboundSa(createEspCipher(spi, key, true, nodeAeadProvider), ENC);
    let delivered = 0;
    const onDeliver = () => delivered++;
    vtep.on('message', onDeliver);
    let stop = false;
    const traffic = (async () => {
      while (!stop) {
        const pending: Promise<void>[] = [];
        for (let i = 0; i < 50; i++) {
          const r = sealOutbound(vxlanDatagram(ENC), 1000, out);
          if (r.ok) pending.push(send(peerEsp, r.datagram, PORTS.esp, A.underlay));
          pending.push(toGateway(vtep, vxlanDatagram(ENC)));
        }
        await Promise.all(pending);
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (let round = 0; round < 200; round++) {
      dp.installInbound(spec);
      if (round % 20 === 0) {
        await dp.removePeer(PEER.id);
        await dp.addPeer(PEER);
        dp.activateOutbound({ spi: spiOut, keymat: keyOut, esn: true, vni: ENC, peerId: PEER.id, epoch: 7 });
        dp.installInbound(spec);
      }
      await new Promise((r) => setTimeout(r, 1));
      dp.retireInbound(PEER.id, ENC, 6);
      const settled = pair(ENC)?.rxPackets ?? 0;
      await new Promise((r) => setTimeout(r, 1));
      // With the SA retired, nothing more is opened.
      expect(pair(ENC)?.rxPackets ?? 0).toBe(settled);
    }
    stop = true;
    await traffic;
    vtep.off('message', onDeliver);
    console.log(`native tables: ${delivered} delivered while the SA came and went 200 times`);
    expect(delivered).toBeGreaterThan(0);
    expect(dp.status().unattributedDrops['unknown-spi'] ?? 0).toBeGreaterThan(0);
  });

  it('status() has the Gateway.status() pair shape', () => {
    dp.installInbound({ spi: 0x0003_0009, keymat: keyOut, esn: true, vni: ENC, peerId: PEER.id, epoch: 8 });
    const p = pair(ENC);
    expect(Object.keys(p).sort()).toEqual([
      'drops',
      'encrypted',
      'inbound',
      'outbound',
      'peer',
      'rxBytes',
      'rxPackets',
      'txBytes',
      'txPackets',
      'vni',
    ]);
    expect(p.encrypted).toBe(true);
    expect(p.inbound).toEqual([{ spi: 0x0003_0009, epoch: 8, opened: 0 }]);
    // The SPI under another network: refused, with another key (the same key would be a key reused).
    const other = new SecretKey(new Prng(5).bytes(20));
    expect(() =>
      dp.installInbound({ spi: 0x0003_0009, keymat: other, esn: true, vni: PLAIN, peerId: PEER.id, epoch: 8 }),
    ).toThrow(expect.objectContaining({ code: 'VEIL_ERR_SA_SPI_IN_USE' }));
    expect(() =>
      dp.installInbound({ spi: 0x0003_0009, keymat: keyOut, esn: true, vni: PLAIN, peerId: PEER.id, epoch: 8 }),
    ).toThrow(expect.objectContaining({ code: 'VEIL_ERR_SA_KEY_REUSED' }));
  });
});
