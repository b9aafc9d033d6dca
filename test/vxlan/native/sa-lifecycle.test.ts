// SA lifecycle in the native data plane (findings of the independent review): an SA taken out of service
// and installed again with the same key resumes — its sequence (no GCM nonce is used twice) and its replay
// window (no old packet is accepted again) — while a new key under the same SPI replaces it.
import type dgram from 'node:dgram';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadNative, type NativeHandle, type NativeSaSpec } from '../../../src/vxlan/native/addon.js';
import { TestSockets } from '../../support/udp.js';
import { waitUntil } from '../../support/wait.js';

const addon = loadNative();
// deliveryPort 0: any source port, so no privilege is needed (the privileged one: test/system/native/delivery-port.test.ts).
const PORTS = {
  espPort: 27500,
  plainPort: 27789,
  vtepPort: 27790,
  peerEspPort: 37500,
  peerPlainPort: 37789,
  deliveryPort: 0,
};
const [UNDERLAY, HOST, VTEP, PEER] = ['127.0.0.61', '127.0.0.62', '127.0.0.63', '127.0.0.64'];
const GATEWAY_PORT = 17794;
/** Peer 5's gateway address in the loopback peer net 127.61.64.0/18. */
const PEER_NET = '127.61.64.0';
const GATEWAY = '127.61.64.5';
const sockets = new TestSockets();
let dp: NativeHandle<'dp'>;
let peerEsp: dgram.Socket;
let vtep: dgram.Socket;
const seenByPeer: string[] = [];
let delivered = 0;

const spec = (spi: number, keyByte: number): NativeSaSpec => ({
  spi,
  key: Buffer.alloc(16, keyByte),
  salt: Buffer.alloc(4, 9),
  esn: true,
  vni: 42,
  peer: 5,
  epoch: 1,
});

beforeAll(async () => {
  dp = addon.dpCreate({
    underlayAddress: UNDERLAY,
    hostAddress: HOST,
    vtepAddress: VTEP,
    peerNet: PEER_NET,
    gatewayPort: GATEWAY_PORT,
    ...PORTS,
  });
  addon.dpStart(dp);
  addon.dpSetNetwork(dp, 42, true);
  addon.dpAddPeer(dp, 5, PEER);
  peerEsp = await sockets.bind(PEER, PORTS.peerEspPort);
  peerEsp.on('message', (m) => seenByPeer.push(m.subarray(4, 8).toString('hex'))); // the sequence number on the wire
  vtep = await sockets.bind(VTEP, PORTS.vtepPort);
  vtep.on('message', () => delivered++);
});

afterAll(() => {
  sockets.closeAll();
  addon.dpClose(dp);
});

async function sendFromVtep(): Promise<void> {
  const vx = Buffer.alloc(60);
  vx[0] = 8;
  vx.writeUInt32BE(42 << 8, 4);
  const before = seenByPeer.length;
  await new Promise<void>((resolve) => vtep.send(vx, GATEWAY_PORT, GATEWAY, () => resolve()));
  await waitUntil('the sealed datagram at the peer', () => seenByPeer.length > before);
}

it('re-activating the same outbound SA after the peer or the SA was removed resumes its sequence', async () => {
  const sa = spec(0x1234, 7);
  addon.dpSetOutbound(dp, sa);
  await sendFromVtep();
  await sendFromVtep();
  addon.dpRemovePeer(dp, 5);
  addon.dpAddPeer(dp, 5, PEER);
  addon.dpSetOutbound(dp, sa);
  await sendFromVtep();
  addon.dpRemoveOutbound(dp, 5, 42);
  addon.dpSetOutbound(dp, sa);
  await sendFromVtep();
  expect(seenByPeer).toEqual(['00000001', '00000002', '00000003', '00000004']);
});

it('re-installing the same inbound SA keeps its replay window; a new key under the same SPI replaces it', async () => {
  const esp = await sockets.bind(PEER, 0);
  const build = (keyByte: number) => {
    const sealer = addon.createSa(Buffer.alloc(16, keyByte), Buffer.alloc(4, 9), 0x4321, true, true);
    return Array.from({ length: 20 }, (_, i) => {
      const seq = i + 1;
      const pt = Buffer.alloc(80); // inner UDP 8 + VXLAN 8 + 60, padding 1 2, pad length 2, next header 17
      pt.writeUInt16BE(4789, 2);
      pt.writeUInt16BE(76, 4);
      pt[8] = 8;
      pt.writeUInt32BE(42 << 8, 12);
      pt.set([1, 2, 2, 17], 76);
      const iv = Buffer.alloc(8);
      iv.writeUInt32BE(seq, 4);
      return addon.sealRawDanger(sealer, 0, seq, iv, pt);
    });
  };
  const sendAll = async (packets: Buffer[], expectDelivered: number) => {
    for (const p of packets) esp.send(p, PORTS.espPort, UNDERLAY);
    await waitUntil(`${expectDelivered} delivered`, () => delivered >= expectDelivered);
    await new Promise((r) => setTimeout(r, 150)); // and no more than that
    expect(delivered).toBe(expectDelivered);
  };
  const original = build(7);
  addon.dpInstallInbound(dp, spec(0x4321, 7));
  const base = delivered;
  await sendAll(original, base + 20);
  addon.dpRemovePeer(dp, 5);
  addon.dpAddPeer(dp, 5, PEER);
  addon.dpInstallInbound(dp, spec(0x4321, 7));
  esp.send(original[0]!, PORTS.espPort, UNDERLAY); // a replay: must stay dropped
  await new Promise((r) => setTimeout(r, 200));
  expect(delivered).toBe(base + 20);
  // The peer restarted (new incarnation → new key, same SPI and epoch): its packets must be accepted.
  addon.dpInstallInbound(dp, spec(0x4321, 8));
  await sendAll(build(8), base + 40);
});

it('refuses reserved SPIs (0-255, RFC 4303 §2.1) from JS', () => {
  for (const spi of [0, 1, 255]) expect(() => addon.dpSetOutbound(dp, spec(spi, 7))).toThrow(/SPI >= 256/);
});

it('refuses numbers from JS that are not finite integers in range: NaN, ±Infinity, fractions', () => {
  for (const budget of [NaN, Infinity, -Infinity, 1.5, 0, 2 ** 53])
    expect(() => addon.dpSetOutbound(dp, { ...spec(0x5678, 7), budget }), String(budget)).toThrow(
      expect.objectContaining({ code: 'VEIL_ERR_NATIVE_ARGS' }),
    );
  for (const bad of [NaN, Infinity, -Infinity, 1.5, -1, 2 ** 32]) {
    expect(() => addon.dpSetOutbound(dp, { ...spec(0x5678, 7), epoch: bad }), `epoch ${bad}`).toThrow(
      expect.objectContaining({ code: 'VEIL_ERR_NATIVE_ARGS' }),
    );
    expect(() => addon.dpSetNetwork(dp, bad, true), `vni ${bad}`).toThrow(
      expect.objectContaining({ code: 'VEIL_ERR_NATIVE_ARGS' }),
    );
    expect(() => addon.dpRemoveInbound(dp, bad), `spi ${bad}`).toThrow(
      expect.objectContaining({ code: 'VEIL_ERR_NATIVE_ARGS' }),
    );
  }
  // Nothing of it went in.
  expect(addon.dpStats(dp).pairs.find((p) => p.peer === 5 && p.vni === 42)?.outbound?.spi).not.toBe(0x5678);
});
