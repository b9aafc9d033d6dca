// The TAP port end to end (docs/plumbing.md "The TAP port"): three hosts on one encrypted network.
// Host 1 has a TAP port; host 2 the kernel VXLAN device (--vtep kernel); host 3 wants a TAP port but its
// gateway runs where /dev/net/tun is /dev/null (a mount namespace of its own), so it falls back to the
// kernel's device and says why. The wire is the same either way, so the kinds mix: from a TAP port to
// the kernel's device, the receiving kernel checks every checksum the sending gateway's segmentation
// made; from the kernel's device to a TAP port, the receiving gateway merges segments into one write.
// TAP port to TAP port is every other data-path test (the default).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MiB, tcpTransfer } from '../support/tcp-transfer.js';
import { createOverlayBed, type Container, type NetworkDef, type OverlayBed } from './overlay-bed.js';

const ENC: NetworkDef = { id: 'enc', index: 1, vni: 4120, encrypted: true, subnet: '10.43.0' };
const BYTES = 20 * MiB;
const TRANSFER_TIMEOUT = 60_000;

let ob: OverlayBed;
let on: Container[] = []; // host 1's, host 2's, host 3's container

beforeAll(async () => {
  ob = await createOverlayBed({
    hosts: 3,
    networks: [ENC],
    vtep: ['tap', 'kernel', 'tap'],
    // A slave mount namespace (the gateway still makes the vtep namespace where the host sees it:
    // docs/plumbing.md "The vtep namespace's mount") in which /dev/net/tun opens /dev/null.
    launchers: [
      undefined,
      undefined,
      [
        'unshare',
        '--mount',
        '--propagation',
        'slave',
        'sh',
        '-c',
        'mount --bind /dev/null /dev/net/tun && exec "$@"',
        'no-tun',
      ],
    ],
  });
  on = (await ob.containersOnEveryHost([ENC])).get(ENC.id)!;
}, 120_000);

afterAll(async () => {
  await ob?.destroy();
});

/** The names of the ports of the network's bridge in host i's vtep namespace. */
async function bridgePorts(i: number): Promise<string[]> {
  const h = ob.hosts[i - 1]!;
  const r = await ob.bed.exec(h.netns, ['ip', '-n', h.vtepNetns, '-j', 'link', 'show', 'master', `br${ENC.vni}`]);
  return (JSON.parse(r.stdout) as Array<{ ifname: string }>).map((l) => l.ifname);
}

async function drops(i: number): Promise<Record<string, number>> {
  const s = await ob.status(i);
  const sum: Record<string, number> = {};
  for (const d of [...s.pairs.map((p) => p.drops), s.unattributedDrops])
    for (const [k, v] of Object.entries(d)) sum[k] = (sum[k] ?? 0) + (v ?? 0);
  return sum;
}

describe('an encrypted network on TAP ports and on the kernel VXLAN device', () => {
  it('each host says where the network meets its data path; its bridge has that port, never both', async () => {
    const vtepOf = async (i: number) => (await ob.status(i)).networks.find((n) => n.vni === ENC.vni)?.vtep;
    expect(await vtepOf(1)).toMatchObject({ kind: 'tap', offloads: true });
    expect(await vtepOf(2)).toEqual({ kind: 'kernel', reason: '--vtep kernel' });
    expect(await vtepOf(3)).toEqual({
      kind: 'kernel',
      reason: expect.stringMatching(/^TUNSETIFF for TAP tp4120: Inappropriate ioctl/),
    });
    expect(ob.gateways[2]!.stdout()).toMatch(
      /no TAP port for the network: its frames go through the kernel VXLAN device/,
    );
    for (const [i, has, hasNot] of [
      [1, 'tp', 'vx'],
      [2, 'vx', 'tp'],
      [3, 'vx', 'tp'],
    ] as const) {
      const ports = await bridgePorts(i);
      expect(ports, `host ${i}`).toContain(`${has}${ENC.vni}`);
      expect(ports, `host ${i}`).not.toContain(`${hasNot}${ENC.vni}`);
    }
  });

  for (const [src, dst, what] of [
    [1, 2, 'TAP port to kernel device'],
    [2, 1, 'kernel device to TAP port'],
    [3, 1, 'kernel device, fallen back, to TAP port'],
  ] as const) {
    it(
      `20 MiB over TCP from host ${src} to host ${dst} (${what}) arrive intact`,
      async () => {
        const from = on[src - 1]!;
        const to = on[dst - 1]!;
        const r = await tcpTransfer(ob.bed, {
          fromNs: from.ns,
          toNs: to.ns,
          toIp: to.ip,
          bytes: BYTES,
          seed: `tap-${src}-${dst}`,
          timeoutMs: TRANSFER_TIMEOUT,
        });
        console.log(`[tap-port] h${src} → h${dst} (${what}): ${((r.mbPerSecond * 8) / 1e3).toFixed(2)} Gbit/s`);
        expect(r.sent.sha256).toBe(r.expectedSha256);
        expect(r.received.bytes).toBe(BYTES);
        expect(r.received.sha256).toBe(r.expectedSha256);
        for (const i of [src, dst]) {
          const d = await drops(i);
          for (const reason of ['auth-failed', 'bad-frame', 'send-failed', 'unknown-vni', 'oversize'])
            expect(d[reason] ?? 0, `host ${i} ${reason}`).toBe(0);
        }
      },
      TRANSFER_TIMEOUT + 30_000,
    );
  }

  it('pings cross between the kinds at every size: small, the overlay MTU, and fragmented above it', async () => {
    // 1377 bytes of ICMP data fill the encrypted overlay's 1405-byte MTU (docs/wire.md "MTU"); 3000 are fragmented.
    for (const size of [56, 1377, 3000])
      for (const [src, dst] of [
        [1, 2],
        [2, 3],
        [3, 1],
      ] as const) {
        const r = await ob.bed.exec(
          on[src - 1]!.ns,
          ['ping', '-n', '-q', '-c', '3', '-i', '0.2', '-W', '2', '-s', String(size), on[dst - 1]!.ip],
          { allowFail: true },
        );
        expect(r.code, `${size} bytes h${src} → h${dst}: ${r.stdout}`).toBe(0);
      }
  });
});
