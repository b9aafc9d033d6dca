// Plain networks are standard VXLAN: veil hosts 1 and 2 interoperate with a Linux kernel VXLAN VTEP on
// host 3, which runs no veil, on both plain paths (kernel: the default; gateway). The gateways list
// host 3 as a peer, so they flood to 198.18.0.3:4789 and accept VXLAN from it; host 3's kernel VTEP
// floods to 198.18.0.1 and .2 port 4789. An encrypted network's VNI sent as plain VXLAN by that
// kernel VTEP is a downgrade: dropped and counted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MiB, tcpTransfer } from '../support/tcp-transfer.js';
import type { BedProcess } from './bed.js';
import type { PlainPath } from '../../../src/model/plain-path.js';
import { createOverlayBed, type NetworkDef, type OverlayBed } from './overlay-bed.js';
import { waitUntil } from '../../support/wait.js';

const PLAIN: NetworkDef = { id: 'plain', index: 1, vni: 4510, encrypted: false, subnet: '10.51.0' };
const ENC: NetworkDef = { id: 'enc', index: 2, vni: 4511, encrypted: true, subnet: '10.52.0' };
const KERNEL_HOST = 3;
const TRANSFER_BYTES = 8 * MiB;

/** An endpoint on an overlay network: a veil container or the kernel VTEP's container. */
interface Endpoint {
  ns: string;
  ip: string;
  mac: string;
}

/** An overlay bed of two veil hosts and host 3 with a kernel VTEP per network, on one plain path. */
function interopSuite(plainPath: PlainPath): void {
  let ob: OverlayBed;
  const veil = new Map<string, Endpoint[]>(); // network id → veil containers on hosts 1, 2
  const kernel = new Map<string, Endpoint>(); // network id → the container behind host 3's kernel VTEP
  const spawned = new Set<BedProcess>();

  /**
   * In host 3's netns: a kernel VXLAN device for `net` on the underlay, a bridge, and a container
   * attached by a veth; flooding (all-zero FDB entry) to the two veil hosts.
   */
  async function kernelVtep(net: NetworkDef, suffix: string): Promise<Endpoint> {
    const h3 = ob.hosts[KERNEL_HOST - 1]!.netns;
    const ns = await ob.bed.namespace(`k${KERNEL_HOST}${suffix}`);
    const vx = `vx${suffix}`;
    const br = `br${suffix}`;
    const port = `kp${suffix}`;
    const ip = `${net.subnet}.${10 * KERNEL_HOST + 3}`;
    const mac = `02:42:ee:03:${net.index.toString(16).padStart(2, '0')}:21`;
    const inH3 = (...args: string[]) => ob.bed.exec(h3, args);
    await inH3(
      'ip',
      'link',
      'add',
      vx,
      'mtu',
      '1450',
      'type',
      'vxlan',
      'id',
      String(net.vni),
      'local',
      '198.18.0.3',
      'dstport',
      '4789',
      'nolearning',
      'dev',
      'eth0',
    );
    await inH3('ip', 'link', 'add', br, 'mtu', '1450', 'type', 'bridge');
    await inH3('ip', 'link', 'set', vx, 'master', br);
    await inH3('ip', 'link', 'add', port, 'mtu', '1450', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    await inH3('ip', 'link', 'set', port, 'master', br);
    for (const dst of ['198.18.0.1', '198.18.0.2'])
      await inH3('bridge', 'fdb', 'append', '00:00:00:00:00:00', 'dev', vx, 'dst', dst);
    for (const link of [vx, br, port]) await inH3('ip', 'link', 'set', link, 'up');
    await ob.bed.exec(ns, ['ip', 'link', 'set', 'eth0', 'address', mac, 'mtu', '1450', 'up']);
    await ob.bed.exec(ns, ['ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    return { ns, ip, mac };
  }

  beforeAll(async () => {
    ob = await createOverlayBed({ hosts: 3, veilHosts: 2, networks: [PLAIN, ENC], plainPath });
    expect(ob.gateways).toHaveLength(2);
    // Host 3 runs no veil: none of the plumbing the bed gave every host (its underlay firewall would
    // refuse the veil hosts' VXLAN: they are no peers of its).
    await ob.hosts[KERNEL_HOST - 1]!.plumbing.teardownHost();
    // The bed runs this kernel VTEP, not a real NIC: a veth hands TCP to the peer with CHECKSUM_PARTIAL,
    // inner checksum unfilled. Without tx offload the kernel completes it (and segments) before the
    // veth, as a NIC would do on the wire. (plumbing.ts does the same on the veil side's VTEP veth.)
    await ob.bed.exec(ob.hosts[KERNEL_HOST - 1]!.netns, ['ethtool', '-K', 'eth0', 'tx', 'off']);
    for (const net of [PLAIN, ENC]) {
      veil.set(net.id, [await ob.container(1, net), await ob.container(2, net)]);
      kernel.set(net.id, await kernelVtep(net, net.encrypted ? 'e' : 'p'));
    }
  }, 120_000);

  afterAll(async () => {
    await Promise.all([...spawned].map((p) => p.stop(1_000)));
    await ob?.destroy();
  });

  async function ping(from: Endpoint, to: Endpoint, count = 3): Promise<boolean> {
    const r = await ob.bed.exec(from.ns, ['ping', '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '2', to.ip], {
      allowFail: true,
    });
    return r.code === 0;
  }

  /** What host `host` carried of the plain network to and from host 3: its pair, or its kernel device. */
  async function plainTraffic(
    host: number,
  ): Promise<{ rxPackets: number; txPackets: number; txBytes: number; rxBytes: number }> {
    if (plainPath === 'gateway') {
      const pair = await ob.pair(host, KERNEL_HOST, PLAIN.vni);
      expect(pair?.drops).toEqual({});
      return pair ?? { rxPackets: 0, txPackets: 0, txBytes: 0, rxBytes: 0 };
    }
    const device = await ob.plain(host, PLAIN.vni);
    expect(device.notAPeer.packets).toBe(0);
    return device;
  }

  describe('plain network with a Linux kernel VXLAN VTEP on a host without veil', () => {
    it('the kernel VTEP container and the veil containers on hosts 1 and 2 ping each other', async () => {
      const k = kernel.get(PLAIN.id)!;
      for (const v of veil.get(PLAIN.id)!) {
        expect(await ping(k, v), `kernel ${k.ip} → veil ${v.ip}`).toBe(true);
        expect(await ping(v, k), `veil ${v.ip} → kernel ${k.ip}`).toBe(true);
      }
      // Both hosts carried the traffic.
      for (const host of [1, 2]) {
        const t = await plainTraffic(host);
        expect(t.rxPackets, `host ${host} rx`).toBeGreaterThan(0);
        expect(t.txPackets, `host ${host} tx`).toBeGreaterThan(0);
      }
    });

    for (const direction of ['kernel → veil', 'veil → kernel'] as const) {
      it(`${TRANSFER_BYTES / MiB} MiB over TCP, ${direction} (host 1), arrive intact`, async () => {
        const k = kernel.get(PLAIN.id)!;
        const v = veil.get(PLAIN.id)![0]!;
        const [from, to] = direction === 'kernel → veil' ? [k, v] : [v, k];
        const before = await plainTraffic(1);
        const r = await tcpTransfer(ob.bed, {
          fromNs: from.ns,
          toNs: to.ns,
          toIp: to.ip,
          bytes: TRANSFER_BYTES,
          seed: `interop-${direction}`,
          timeoutMs: 60_000,
        });
        console.log(
          `[interop ${plainPath}] ${direction}: ${(r.received.bytes / MiB).toFixed(0)} MiB in ${(r.received.ms / 1e3).toFixed(2)} s = ${r.mbPerSecond.toFixed(1)} MB/s`,
        );
        expect(r.sent).toEqual({ bytes: TRANSFER_BYTES, sha256: r.expectedSha256 });
        expect(r.received.bytes).toBe(TRANSFER_BYTES);
        expect(r.received.sha256).toBe(r.expectedSha256);
        const after = await plainTraffic(1);
        // Host 1 carried the data (bytes: a kernel device counts a GSO burst as one packet).
        const data = direction === 'kernel → veil' ? 'rxBytes' : 'txBytes';
        expect(after[data] - before[data], `host 1 ${data} of the plain network`).toBeGreaterThanOrEqual(
          TRANSFER_BYTES,
        );
      }, 90_000);
    }
  });

  describe('encrypted network: the kernel VTEP sends its VNI as plain VXLAN', () => {
    it("is dropped and counted as 'plaintext-on-encrypted'", async () => {
      const k = kernel.get(ENC.id)!;
      const v = veil.get(ENC.id)![0]!;
      const cap = ob.bed.spawn(v.ns, ['tcpdump', '-i', 'eth0', '-n', '-l', '-e', '-p', `ether src ${k.mac}`]);
      spawned.add(cap);
      await waitUntil('tcpdump', () => /listening on/.test(cap.stderr()) || cap.child.exitCode !== null);
      // Through the gateway the pair (h3, enc) counts it; in the kernel the host's underlay firewall does.
      const downgrades = async () =>
        plainPath === 'gateway'
          ? ((await ob.pair(1, KERNEL_HOST, ENC.vni))?.drops['plaintext-on-encrypted'] ?? 0)
          : (await ob.plain(1, PLAIN.vni)).plaintextOnEncrypted.packets;
      const before = await downgrades();

      expect(await ping(k, v, 2), `kernel ${k.ip} → veil ${v.ip} on the encrypted network`).toBe(false);

      expect(await downgrades()).toBeGreaterThan(before);
      expect((await ob.pair(1, KERNEL_HOST, ENC.vni))?.rxPackets ?? 0).toBe(0);
      // The same kernel VTEP's plain network still works: the drop is about the VNI, not the sender.
      expect(await ping(kernel.get(PLAIN.id)!, veil.get(PLAIN.id)![0]!, 1)).toBe(true);

      await new Promise((r) => setTimeout(r, 200));
      await cap.stop();
      expect(cap.stdout().trim(), 'the veil container saw frames of the kernel VTEP').toBe('');
    });
  });
}

for (const plainPath of ['kernel', 'gateway'] as const)
  describe(`plain path: ${plainPath}`, () => interopSuite(plainPath));
