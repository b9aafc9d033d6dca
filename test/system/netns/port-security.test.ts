// Port security (docs/plumbing.md "Port security"), end to end: real etcd, a `veil gateway` per host,
// containers connected through the hosts' APIs, the resolver answering them.
//
//   network psn (10.93.0.0/24, encrypted): victim (eth0) and forger on h1, peer on h2
//   network psm (10.94.0.0/24, plain):     victim (eth1) on h1, secret on h2
//
// Strict reverse-path filtering only checks that a source belongs to the subnet of the bridge it came
// in on; without port security the forger, on psn alone, can take the victim's address (and its MAC,
// through bridge learning), learn psm's names from the resolver, make the victim's peer believe it is
// the victim, and reflect the resolver's answers at the victim. Each attempt here is dropped at the
// forger's port and counted (nft counter port_spoofed, read straight from the vtep namespace, and in
// the gateway's /status and /metrics), and both containers' own traffic keeps flowing.
import dnsPacket from 'dns-packet';
import { beforeAll, describe, expect, it } from 'vitest';
import { endpointLinkName } from '../../../src/host/names.js';
import { arpFrame, ethernetFrame, udpFrame, type FrameEnd } from '../../support/frames.js';
import { waitFor } from '../../support/wait.js';
import { captureUdp } from './capture.js';
import { cleanUpClusterBed } from './cluster-hooks.js';
import { createClusterBed, type ClusterBed } from './cluster-bed.js';

const RESOLVER = '169.254.53.53';
const PROBE_PORT = 7777;
const PYTHON = '/usr/bin/python3';
/** Frames of each kind the forger sends per attempt. */
const N = 10;

/** Sends each hex frame as it is on an interface (AF_PACKET): no kernel stack chooses anything. */
const RAW_SENDER = String.raw`
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for h in sys.argv[2:]:
    s.send(bytes.fromhex(h))
    time.sleep(0.002)
print('sent', len(sys.argv) - 2)
`;

/** Prints every UDP datagram it receives on the port: source address and payload. */
const LISTENER = String.raw`
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', int(sys.argv[1])))
print('listening', flush=True)
while True:
    d, a = s.recvfrom(4096)
    print(a[0], d.decode('latin1'), flush=True)
`;

interface Ctr {
  ns: string;
  ip: string;
  mac: string;
  endpoint: string;
  host: number;
}

let cb: ClusterBed;
const vni: Record<string, number> = {};
const ctr: Record<string, Ctr> = {};

async function connect(host: number, network: string, name: string, ns: string, netns: string): Promise<Ctr> {
  const r = await cb.api(host, 'POST', `/networks/${network}/connect`, { Container: name, Sandbox: { Netns: netns } });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return {
    ns,
    ip: (r.body.IPv4Address as string).split('/')[0]!,
    mac: r.body.MacAddress,
    endpoint: r.body.EndpointID,
    host,
  };
}

const exec = (ns: string, argv: string[]) => cb.bed.exec(ns, argv, { allowFail: true, timeoutMs: 20_000 });
const vtep1 = () => cb.bed.hosts[0]!.vtepNetns;
const port = (network: string, c: Ctr) => endpointLinkName(vni[network]!, c.endpoint);
const end = (c: Ctr): FrameEnd => ({ mac: c.mac, ip: c.ip });
const hex = (frames: Uint8Array[]) => frames.map((f) => Buffer.from(f).toString('hex'));

async function ping(from: Ctr, to: string, count = 1): Promise<boolean> {
  return (await exec(from.ns, ['ping', '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '2', to])).code === 0;
}

/** dig inside a container: the status line, or "no answer" when nothing came back. */
async function dig(from: Ctr, args: string[]): Promise<{ status: string; answers: string[] }> {
  const r = await exec(from.ns, ['dig', '+tries=1', '+time=2', '+nocookie', `@${RESOLVER}`, ...args]);
  const status = /status: (\w+)/.exec(r.stdout)?.[1] ?? `no answer (exit ${r.code})`;
  const answer = r.stdout.split(';; ANSWER SECTION:\n')[1]?.split('\n\n')[0] ?? '';
  return {
    status,
    answers: answer
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(/\s+/).at(-1)!),
  };
}

/**
 * The port security counters of host 1's vtep namespace, read with nft (0 when the table is missing, so
 * that a gateway without port security fails on what its containers see, not on a missing table).
 */
async function counters(): Promise<{ spoofed: number; notIpv4: number }> {
  const r = await exec(vtep1(), ['nft', '-j', 'list', 'counters', 'table', 'bridge', 'veil_ports']);
  const list =
    r.code === 0 ? (JSON.parse(r.stdout).nftables as Array<{ counter?: { name: string; packets: number } }>) : [];
  const get = (name: string) => list.find((e) => e.counter?.name === name)?.counter?.packets ?? 0;
  return { spoofed: get('port_spoofed'), notIpv4: get('port_not_ipv4') };
}

async function sendRaw(from: Ctr, frames: Uint8Array[]): Promise<void> {
  const r = await cb.bed.exec(from.ns, [PYTHON, '-c', RAW_SENDER, 'eth0', ...hex(frames)]);
  expect(r.stdout).toContain(`sent ${frames.length}`);
}

/** The bridge MAC the container's permanent neighbour entry for the resolver points at (docs/dns.md). */
async function resolverMac(c: Ctr): Promise<string> {
  const r = await cb.bed.exec(c.ns, ['ip', '-j', 'neigh', 'show', RESOLVER, 'dev', 'eth0']);
  return (JSON.parse(r.stdout) as Array<{ lladdr: string }>)[0]!.lladdr;
}

/** Where host 1's bridge of `network` sends frames for `mac` (its FDB), with the entry's flags. */
async function fdbOf(
  network: string,
  mac: string,
): Promise<Array<{ ifname: string; state?: string; flags: string[] }>> {
  const r = await cb.bed.exec(vtep1(), ['bridge', '-j', 'fdb', 'show', 'br', `br${vni[network]}`]);
  return (JSON.parse(r.stdout) as Array<{ mac: string; ifname: string; state?: string; flags: string[] }>)
    .filter((e) => e.mac === mac)
    .map(({ ifname, state, flags }) => ({ ifname, ...(state !== undefined ? { state } : {}), flags }));
}

beforeAll(async () => {
  cb = await createClusterBed({ hosts: 2 });
  for (const [name, subnet, options] of [
    ['psn', '10.93.0.0/24', { encrypted: '' }],
    ['psm', '10.94.0.0/24', {}],
  ] as const) {
    const r = await cb.api(1, 'POST', '/networks', {
      Name: name,
      Driver: 'overlay',
      Options: options,
      IPAM: { Config: [{ Subnet: subnet }] },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    vni[name] = (await cb.api(1, 'GET', `/networks/${name}`)).body.VNI;
  }
  const victim = await cb.container('victim');
  const forger = await cb.container('forger');
  const peer = await cb.container('peer');
  const secret = await cb.container('secret');
  ctr.victim = await connect(1, 'psn', 'victim', victim.ns, victim.netns);
  ctr.victimM = await connect(1, 'psm', 'victim', victim.ns, victim.netns);
  ctr.forger = await connect(1, 'psn', 'forger', forger.ns, forger.netns);
  ctr.peer = await connect(2, 'psn', 'peer', peer.ns, peer.netns);
  ctr.secret = await connect(2, 'psm', 'secret', secret.ns, secret.netns);
  // The overlay across hosts is up (ARP through the overlay included) before any test measures anything.
  for (const [from, to] of [
    [ctr.victim!, ctr.peer!.ip],
    [ctr.victim!, ctr.secret!.ip],
    [ctr.forger!, ctr.peer!.ip],
  ] as const)
    await waitFor(() => ping(from, to), 30_000, `ping ${to} from ${from.ns}`);
}, 180_000);

cleanUpClusterBed(() => cb);

describe('port security', () => {
  it("pins every container port to its container's MAC and address; both containers' own traffic and names work", async () => {
    // The resolver answers each container for the networks it is on, and only those.
    expect((await dig(ctr.victim!, ['secret'])).answers).toEqual([ctr.secret!.ip]);
    expect((await dig(ctr.victim!, ['peer'])).answers).toEqual([ctr.peer!.ip]);
    expect((await dig(ctr.forger!, ['peer'])).answers).toEqual([ctr.peer!.ip]);
    expect((await dig(ctr.forger!, ['secret'])).answers).not.toContain(ctr.secret!.ip);
    expect(await ping(ctr.victim!, ctr.peer!.ip, 3)).toBe(true);
    expect(await ping(ctr.victim!, ctr.secret!.ip, 3)).toBe(true);
    expect(await ping(ctr.forger!, ctr.peer!.ip, 3)).toBe(true);

    const table = (await exec(vtep1(), ['nft', 'list', 'table', 'bridge', 'veil_ports'])).stdout;
    for (const [network, c] of [
      ['psn', ctr.victim!],
      ['psm', ctr.victimM!],
      ['psn', ctr.forger!],
    ] as const) {
      const p = port(network, c);
      expect(table).toContain(`"${p}" : jump port_${p}`);
      expect(table).toContain(`ether saddr != ${c.mac} counter name "port_spoofed" drop`);
      expect(table).toContain(`ip saddr ${c.ip} accept`);
      expect(table).toContain(`arp saddr ether ${c.mac} arp saddr ip ${c.ip} accept`);
      // The bridge learns nothing from the port; the container's MAC sits there for good.
      const link = (await exec(vtep1(), ['bridge', '-d', 'link', 'show', 'dev', p])).stdout;
      expect(link).toMatch(/ learning off /);
      expect(await fdbOf(network, c.mac)).toEqual([{ ifname: p, state: 'static', flags: ['sticky'] }]);
    }
  }, 60_000);

  it("a forger that takes the victim's MAC and address (ip link set address, ip addr) learns none of the victim's other network's names, and takes none of its traffic", async () => {
    const f = ctr.forger!;
    const v = ctr.victim!;
    const bridge = await resolverMac(f);
    const before = await counters();
    const become = async (mac: string, ip: string) => {
      for (const argv of [
        ['ip', 'link', 'set', 'eth0', 'down'],
        ['ip', 'link', 'set', 'eth0', 'address', mac],
        ['ip', 'addr', 'flush', 'dev', 'eth0'],
        ['ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0'],
        ['ip', 'link', 'set', 'eth0', 'up'],
        // Link down took the resolver's route and neighbour entry: put them back as veil made them.
        ['ip', 'route', 'replace', `${RESOLVER}/32`, 'dev', 'eth0', 'scope', 'link'],
        ['ip', 'neigh', 'replace', RESOLVER, 'lladdr', bridge, 'dev', 'eth0', 'nud', 'permanent'],
      ])
        await cb.bed.exec(f.ns, argv);
    };
    await become(v.mac, v.ip);
    try {
      // The victim's other network, asked as the victim: nothing comes back (before: psm's answer).
      const asked = await dig(f, ['-b', v.ip, 'secret']);
      expect(asked.status, 'the resolver answered the forger as the victim').toMatch(/^no answer/);
      expect((await dig(f, ['-b', v.ip, 'secret.psm'])).status).toMatch(/^no answer/);
      // The victim keeps its traffic and its names meanwhile.
      expect(await ping(v, ctr.peer!.ip, 3)).toBe(true);
      expect((await dig(v, ['secret'])).answers).toEqual([ctr.secret!.ip]);
      expect(await fdbOf('psn', v.mac)).toEqual([{ ifname: port('psn', v), state: 'static', flags: ['sticky'] }]);
    } finally {
      await become(f.mac, f.ip);
    }
    expect((await counters()).spoofed - before.spoofed, "the forger's frames counted").toBeGreaterThanOrEqual(2);
    // The forger as itself works again: its port was never closed, only its lies.
    await waitFor(() => ping(f, ctr.peer!.ip), 20_000, 'the forger reaches its peer as itself');
    expect((await dig(f, ['peer'])).answers).toEqual([ctr.peer!.ip]);
  }, 90_000);

  it("forged IPv4 sources and ARP senders from the forger's own MAC are dropped and counted: the victim's peer hears nothing, the resolver reflects nothing at the victim", async () => {
    const f = ctr.forger!;
    const v = ctr.victim!;
    const p = ctr.peer!;
    // The peer knows the victim's MAC (so a forged ARP reply would overwrite it).
    expect(await ping(p, v.ip, 2)).toBe(true);
    const listener = cb.bed.spawn(p.ns, [PYTHON, '-c', LISTENER, String(PROBE_PORT)]);
    await listener.waitFor(/listening/);
    const bridge = await resolverMac(f);
    const query = dnsPacket.encode({
      type: 'query',
      id: 4242,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type: 'A', name: 'secret' }],
    });
    const asVictim: FrameEnd = { mac: f.mac, ip: v.ip };
    const forged = [
      // UDP to the peer from the victim's address.
      ...Array.from({ length: N }, (_, i) => udpFrame(asVictim, end(p), PROBE_PORT, `forged-${i}`)),
      // DNS to the resolver from the victim's address: its answer would go to the victim.
      ...Array.from({ length: N }, () => udpFrame(asVictim, { mac: bridge, ip: RESOLVER }, 53, query)),
      // ARP replies telling the peer that the victim's address is at the forger's MAC.
      ...Array.from({ length: N }, () => arpFrame(2, asVictim, end(p), p.mac)),
      // ARP with the victim's MAC as sender, from the forger's own Ethernet source.
      ...Array.from({ length: N }, () => arpFrame(2, end(v), end(p), p.mac, f.mac)),
    ];
    const genuine = Array.from({ length: N }, (_, i) => udpFrame(end(f), end(p), PROBE_PORT, `genuine-${i}`));
    const before = await counters();
    const reflected = await captureUdp(cb.bed, v.ns, cb.dir, 'reflected', `udp and src host ${RESOLVER}`, async () => {
      await sendRaw(f, forged);
      await sendRaw(f, genuine);
      // The genuine frames went last on the same way: once they are all in, the forged ones had their chance.
      await waitFor(
        () => genuine.every((_, i) => listener.stdout().includes(`genuine-${i}`)),
        10_000,
        "the forger's genuine datagrams at the peer",
      );
    });
    const after = await counters();

    const heard = listener
      .stdout()
      .split('\n')
      .filter((l) => l.includes('forged-'));
    expect(heard, 'the peer heard the forger as the victim').toEqual([]);
    expect(reflected.length, 'resolver answers reflected at the victim').toBe(0);
    const neigh = JSON.parse(
      (await cb.bed.exec(p.ns, ['ip', '-j', 'neigh', 'show', v.ip, 'dev', 'eth0'])).stdout,
    ) as Array<{
      lladdr?: string;
    }>;
    expect(
      neigh.map((n) => n.lladdr),
      "the peer's ARP entry for the victim",
    ).toEqual([v.mac]);
    expect(after.spoofed - before.spoofed, 'nft counter port_spoofed').toBe(forged.length);
    // Both containers' own traffic still flows.
    expect(await ping(p, v.ip, 3)).toBe(true);
    expect(await ping(f, p.ip, 3)).toBe(true);
  }, 60_000);

  it("a link-local frame with the victim's MAC does not move it: the bridge learns nothing from a container port", async () => {
    const f = ctr.forger!;
    const v = ctr.victim!;
    // 01:80:c2:00:00:0e (LLDP): a bridge learns from link-local frames before any netfilter hook sees them.
    await sendRaw(
      f,
      Array.from({ length: N }, () => ethernetFrame('01:80:c2:00:00:0e', v.mac, 0x88cc, new Uint8Array(46))),
    );
    expect(await fdbOf('psn', v.mac), "the victim's MAC stays on the victim's port").toEqual([
      { ifname: port('psn', v), state: 'static', flags: ['sticky'] },
    ]);
    expect(await ping(ctr.peer!, v.ip, 3)).toBe(true);
  }, 30_000);

  it("IPv6 from a container is dropped and counted: veil networks are IPv4-only, no IPv6 address is a port's own", async () => {
    const f = ctr.forger!;
    // An IPv6 header (version 6, next header 59: none) to ff02::1 from the forger's own MAC.
    const ipv6 = new Uint8Array(40);
    ipv6[0] = 0x60;
    ipv6[6] = 59;
    ipv6[7] = 64;
    ipv6.set([0xff, 0x02, ...new Array<number>(13).fill(0), 1], 24);
    const before = await counters();
    await sendRaw(
      f,
      Array.from({ length: N }, () => ethernetFrame('33:33:00:00:00:01', f.mac, 0x86dd, ipv6)),
    );
    const after = await counters();
    // At least these: the containers' own IPv6 (router solicitations, MLD) lands here too.
    expect(after.notIpv4 - before.notIpv4).toBeGreaterThanOrEqual(N);
    expect(after.spoofed).toBe(before.spoofed);
  }, 30_000);

  it('the gateway reports the drops in /status and /metrics', async () => {
    const now = await counters();
    expect(now.spoofed).toBeGreaterThan(0);
    // Read every few seconds (COUNTERS_POLL_MS); nothing spoofs any more, so it settles on nft's count.
    const status = await waitFor(
      async () => {
        const s = (await cb.api(1, 'GET', '/status')).body;
        return s.portSecurity?.spoofed?.packets === now.spoofed ? s : undefined;
      },
      20_000,
      'port security counters in /status',
    );
    expect(status.portSecurity.notIpv4.packets).toBeGreaterThan(0);
    const metrics = (await cb.api(1, 'GET', '/metrics')).body as string;
    expect(metrics).toContain(`veil_port_security_dropped_packets_total{reason="spoofed-source"} ${now.spoofed}`);
    expect(metrics).toMatch(/veil_port_security_dropped_packets_total\{reason="not-ipv4"\} \d+/);
  }, 30_000);

  it('disconnecting a container unpins its port; connecting it again pins it again', async () => {
    const f = ctr.forger!;
    const p = port('psn', f);
    expect((await cb.api(1, 'POST', '/networks/psn/disconnect', { Container: 'forger' })).status).toBe(204);
    const table = (await exec(vtep1(), ['nft', 'list', 'table', 'bridge', 'veil_ports'])).stdout;
    expect(table).not.toContain(p);
    expect(table).toContain(port('psn', ctr.victim!));
    const again = await connect(1, 'psn', 'forger', f.ns, `/run/netns/${f.ns}`);
    ctr.forger = again;
    const repinned = (await exec(vtep1(), ['nft', 'list', 'table', 'bridge', 'veil_ports'])).stdout;
    expect(repinned).toContain(`"${port('psn', again)}" : jump port_${port('psn', again)}`);
    expect(repinned).toContain(`ip saddr ${again.ip} accept`);
    await waitFor(() => ping(again, ctr.peer!.ip), 20_000, 'the reconnected container reaches its peer');
  }, 60_000);
});
