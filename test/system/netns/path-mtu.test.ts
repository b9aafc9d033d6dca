// A smaller path MTU toward one peer (docs/wire.md "MTU"): host 1 receives an ICMP "fragmentation
// needed" (RFC 1191) quoting one of its ESP datagrams to host 2, as a router on a 1300-byte link would
// send. Host 1's gateway shows the path MTU for peer h2 in GET /status and logs it once with the --mtu
// that would fit; full-size frames toward h2 still arrive (host 1 fragments them), and h2's path back
// is untouched.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../support/wait.js';
import { createOverlayBed, type Container, type NetworkDef, type OverlayBed } from './overlay-bed.js';

const ENC: NetworkDef = { id: 'enc', index: 1, vni: 4700, encrypted: true, subnet: '10.70.0' };
const PATH_MTU = 1300;

/** Sends, from a raw socket, an ICMP type 3 code 4 to `src` quoting a UDP datagram src:sport → dst:dport. */
const FRAG_NEEDED = String.raw`
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return (~s) & 0xffff
src, dst, sport, dport, mtu = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 1500, 0, 0x4000, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
icmp = struct.pack('!BBHHH', 3, 4, 0, 0, mtu) + ip + struct.pack('!HHHH', sport, dport, 1480, 0)
icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).sendto(icmp, (src, 0))
`;

let ob: OverlayBed;
let c1: Container;
let c2: Container;

beforeAll(async () => {
  ob = await createOverlayBed({ hosts: 2, networks: [ENC] });
  c1 = await ob.container(1, ENC);
  c2 = await ob.container(2, ENC);
}, 120_000);

afterAll(async () => {
  await ob?.destroy();
});

const ping = async (from: Container, to: Container, size: number) =>
  (
    await ob.bed.exec(
      from.ns,
      ['ping', '-n', '-q', '-c', '3', '-i', '0.2', '-W', '2', '-M', 'do', '-s', String(size), to.ip],
      {
        allowFail: true,
      },
    )
  ).code === 0;

describe('a path MTU below the underlay MTU toward one peer', () => {
  it('is shown in GET /status and logged with the --mtu that fits; full-size frames still arrive', async () => {
    // 1405 (the encrypted overlay MTU on 1500) − 28: the largest ICMP payload that fits, as one ESP datagram of 1500.
    expect(await ping(c1, c2, 1377)).toBe(true);
    expect((await ob.status(1)).peers.find((p) => p.id === 'h2')?.pathMtu).toBeUndefined();

    const [h1, h2] = ob.hosts;
    await ob.bed.exec(h2!.netns, [
      'python3',
      '-c',
      FRAG_NEEDED,
      h1!.underlayAddress,
      h2!.underlayAddress,
      '4500',
      '4500',
      String(PATH_MTU),
    ]);
    // The kernel learned it (a route exception toward host 2).
    expect((await ob.bed.exec(h1!.netns, ['ip', 'route', 'get', h2!.underlayAddress])).stdout).toContain(
      `mtu ${PATH_MTU}`,
    );

    const peer = await waitFor(
      async () => (await ob.status(1)).peers.find((p) => p.id === 'h2' && p.pathMtu === PATH_MTU),
      15_000,
      "h2's path MTU in host 1's status",
    );
    expect(peer).toMatchObject({ address: h2!.underlayAddress, pathMtu: PATH_MTU });
    const logged = ob.gateways[0]!.stdout()
      .split('\n')
      .filter((l) => l.includes('path MTU toward a peer is below the underlay MTU'));
    expect(logged).toHaveLength(1);
    expect(JSON.parse(logged[0]!)).toMatchObject({
      level: 40,
      pathMtu: PATH_MTU,
      peers: ['h2'],
      hint: `set --mtu ${PATH_MTU} on every host`,
    });

    // Nothing silently lost: full-size frames toward h2 leave as fragments and arrive.
    expect(await ping(c1, c2, 1377), 'full size, host 1 → host 2').toBe(true);
    expect(await ping(c2, c1, 1377), 'full size, host 2 → host 1').toBe(true);
    expect((await ob.status(2)).peers.find((p) => p.id === 'h1')?.pathMtu).toBeUndefined();
    const drops = (await ob.pair(1, 2, ENC.vni))?.drops ?? {};
    expect(drops['send-failed'] ?? 0).toBe(0);
  }, 60_000);
});
