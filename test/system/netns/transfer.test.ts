// Bulk TCP between containers on different hosts: 50 MiB on an encrypted network (through the
// gateways) and on a plain one (kernel VXLAN to kernel VXLAN, the default plain path) must arrive
// complete and unaltered (sha256 and byte count at the receiver equal the sender's and the stream
// recomputed here). Throughput is printed, not asserted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MiB, tcpTransfer } from '../support/tcp-transfer.js';
import { createOverlayBed, type Container, type NetworkDef, type OverlayBed } from './overlay-bed.js';

const ENC: NetworkDef = { id: 'enc', index: 1, vni: 4110, encrypted: true, subnet: '10.41.0' };
const PLAIN: NetworkDef = { id: 'plain', index: 2, vni: 4111, encrypted: false, subnet: '10.42.0' };
const HOSTS = 3;
const BYTES = 50 * MiB;
const TRANSFER_TIMEOUT = 60_000;

let ob: OverlayBed;
const on = new Map<string, Container[]>(); // network id → container on host 1, 2, 3

beforeAll(async () => {
  ob = await createOverlayBed({ hosts: HOSTS, networks: [ENC, PLAIN] });
  for (const [id, list] of await ob.containersOnEveryHost([ENC, PLAIN])) on.set(id, list);
}, 120_000);

afterAll(async () => {
  await ob?.destroy();
});

async function ping(from: Container, to: Container): Promise<boolean> {
  const r = await ob.bed.exec(from.ns, ['ping', '-n', '-q', '-c', '3', '-i', '0.2', '-W', '2', to.ip], {
    allowFail: true,
  });
  return r.code === 0;
}

for (const net of [ENC, PLAIN]) {
  const kind = net.encrypted ? 'encrypted' : 'plain';
  describe(`${kind} network`, () => {
    for (const [src, dst] of [
      [1, 3],
      [2, 1],
    ] as const) {
      it(
        `50 MiB over TCP from a container on host ${src} to one on host ${dst} arrive intact`,
        async () => {
          const from = on.get(net.id)![src - 1]!;
          const to = on.get(net.id)![dst - 1]!;
          expect(await ping(from, to), `${from.ip} → ${to.ip}`).toBe(true);
          const before = await ob.pair(src, dst, net.vni);
          const plainBefore = net.encrypted ? undefined : await ob.plain(src, net.vni);

          const r = await tcpTransfer(ob.bed, {
            fromNs: from.ns,
            toNs: to.ns,
            toIp: to.ip,
            bytes: BYTES,
            seed: `${net.id}-${src}-${dst}`,
            timeoutMs: TRANSFER_TIMEOUT,
          });
          console.log(
            `[transfer] ${kind} h${src} → h${dst}: ${(r.received.bytes / MiB).toFixed(0)} MiB in ${(r.received.ms / 1e3).toFixed(2)} s = ${r.mbPerSecond.toFixed(1)} MB/s (${((r.mbPerSecond * 8) / 1e3).toFixed(2)} Gbit/s)`,
          );

          expect(r.sent.bytes).toBe(BYTES);
          expect(r.sent.sha256).toBe(r.expectedSha256);
          expect(r.received.bytes).toBe(BYTES);
          expect(r.received.sha256).toBe(r.expectedSha256);

          // At least one datagram per 1500 bytes of payload (MTU 1405/1450, so more in fact).
          const minPackets = Math.floor(BYTES / 1500);
          if (!net.encrypted) {
            // Out of the sending host's VXLAN device (it counts GSO segments as one packet, so bytes),
            // with nothing refused at the receiver.
            const plain = await ob.plain(src, net.vni);
            expect(plain.txBytes - plainBefore!.txBytes).toBeGreaterThanOrEqual(BYTES);
            expect((await ob.plain(dst, net.vni)).notAPeer.packets).toBe(0);
            return;
          }
          // It went through the gateway of the sending host, to the receiving host, sealed.
          const after = await ob.pair(src, dst, net.vni);
          expect(after!.txPackets - (before?.txPackets ?? 0)).toBeGreaterThanOrEqual(minPackets);
          expect(after!.outbound!.sealed - (before?.outbound?.sealed ?? 0)).toBeGreaterThanOrEqual(minPackets);
          const inbound = await ob.pair(dst, src, net.vni);
          expect(inbound!.rxPackets).toBeGreaterThanOrEqual(minPackets);
          // An authentic stream leaves no authentication or isolation drops behind.
          for (const reason of [
            'auth-failed',
            'vni-mismatch',
            'plaintext-on-encrypted',
            'bad-padding',
            'bad-inner-udp',
          ] as const) {
            expect(inbound!.drops[reason] ?? 0, reason).toBe(0);
          }
        },
        TRANSFER_TIMEOUT + 30_000,
      );
    }
  });
}
