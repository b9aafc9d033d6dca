// No local injection (docs/security.md "Lessons from Docker's encrypted overlay", CVE-2023-28840), on both data
// paths and both plain paths. A process of host 1's namespace with no capabilities at all (uid 65534, empty
// bounding set)
//   (a) sends forged VXLAN to the gateway address that leads to host 2 (169.254.64.2:1021): host 1's
//       gateway drops it as 'unauthorized-source' (only the VTEP, 169.254.1.2, may use those addresses),
//       nothing leaves host 1 on the underlay, host 2 opens nothing and its containers see nothing;
//   (b) sends plain VXLAN straight to host 1's VTEP (169.254.1.2:4789) with frames for host 1's own
//       containers: the vtep namespace's firewall (only 169.254.1.1:1022 may send there) drops and
//       counts them, and the containers see nothing;
//   (c) with plain networks in the kernel, sends plain VXLAN of the plain network to host 1's own UDP
//       4789 (the underlay address and loopback): the underlay firewall (peers only) drops and counts it.
// Controls, so that the test can fail: the genuine path works (cross-host pings); the same forged
// datagrams sent as root from the VTEP's address are sealed, carried and delivered (the receivers do
// see such frames); the same unprivileged sends reach the container once a firewall lets them, except
// on the native path, whose encrypted network has a TAP port and so no VTEP socket to send to at all
// (docs/plumbing.md "The TAP port"): without the firewall they still reach nothing.
import { udpFrame } from '../../support/frames.js';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VTEP_DELIVERY_PORT, VTEP_GATEWAY_PORT } from '../../../src/vxlan/wire/constants.js';
import { HOST_INDEX_MAX } from '../../../src/model/ids.js';
import { gatewayAddress } from '../../../src/model/peer-net.js';
import type { PairStatus } from '../../../src/vxlan/datapath.js';
import type { GatewayStatus } from '../../../src/vxlan/gateway.js';
import { UNDERLAY_FIREWALL_TABLE, VTEP_FIREWALL_COUNTER, VTEP_FIREWALL_TABLE } from '../../../src/vxlan/plumbing.js';
import { encodeVxlanHeader } from '../../../src/vxlan/wire/vxlan.js';
import { parsePcap, udpDatagrams, type UdpDatagram } from '../support/pcap.js';
import { waitUntil } from '../../support/wait.js';
import type { BedProcess } from './bed.js';
import { createOverlayBed, type Container, type NetworkDef, type OverlayBed } from './overlay-bed.js';

const ENC: NetworkDef = { id: 'enc', index: 1, vni: 4400, encrypted: true, subnet: '10.64.0' };
const PLAIN: NetworkDef = { id: 'plain', index: 2, vni: 4401, encrypted: false, subnet: '10.65.0' };
const NETWORKS = [ENC, PLAIN];
/** Forged datagrams per network and attempt. */
const N = 20;
const PROBE_PORT = 5555;
const NOBODY = '65534';
const PYTHON = '/usr/bin/python3';

/** Drops every privilege: uid/gid 65534, no groups, no capabilities in any set, no way to regain them. */
const UNPRIVILEGED = [
  'setpriv',
  `--reuid=${NOBODY}`,
  `--regid=${NOBODY}`,
  '--clear-groups',
  '--inh-caps=-all',
  '--ambient-caps=-all',
  '--bounding-set=-all',
  '--no-new-privs',
];

/**
 * The sender: reports who it is and what it could do (capability sets, binding the delivery port, binding
 * the gateway port on every peer's gateway address and on any address, binding the VTEP's address, a raw
 * socket), then sends each hex datagram to (to, port), from `bind` if given.
 */
const SENDER = String.raw`
import errno, json, os, socket, struct, sys, time
a = json.loads(sys.argv[1])
status = dict(l.split(':', 1) for l in open('/proc/self/status') if l.startswith(('Cap', 'Uid', 'NoNewPrivs')))
report = {k: v.strip() for k, v in status.items()}
def attempt(f):
    try:
        f()
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def bind(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((addr, port))
    finally:
        s.close()
report['bindDeliveryPort'] = attempt(lambda: bind(a['hostAddress'], a['deliveryPort']))
base = struct.unpack('!I', socket.inet_aton(a['peerNet']))[0]
gateways = [socket.inet_ntoa(struct.pack('!I', base + i)) for i in range(1, a['peers'] + 1)]
report['bindGateways'] = sorted(set(attempt(lambda g=g: bind(g, a['gatewayPort'])) for g in gateways))
report['bindGatewayPortAnywhere'] = attempt(lambda: bind('0.0.0.0', a['gatewayPort']))
report['bindVtepAddress'] = attempt(lambda: bind(a['vtepAddress'], 0))
report['rawSocket'] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if a.get('bind'):
    s.bind((a['bind'], 0))
sent = 0
for d in a['datagrams']:
    s.sendto(bytes.fromhex(d), (a['to'], a['port']))
    sent += 1
    time.sleep(0.002)
report['sent'] = sent
print(json.dumps(report))
`;

interface SenderReport {
  Uid: string;
  CapInh: string;
  CapPrm: string;
  CapEff: string;
  CapBnd: string;
  CapAmb: string;
  NoNewPrivs: string;
  bindDeliveryPort: string;
  bindGateways: string[];
  bindGatewayPortAnywhere: string;
  bindVtepAddress: string;
  rawSocket: string;
  sent: number;
}

const VARIANTS = [
  { dataPath: 'ts', plainPath: 'gateway' },
  { dataPath: 'native', plainPath: 'kernel' },
] as const;

for (const { dataPath, plainPath } of VARIANTS) {
  describe(`no local injection [${dataPath} data path, plain networks via ${plainPath}]`, () => {
    /** The networks whose frames pass through the gateway (a plain one in the kernel does not). */
    const RELAYED = plainPath === 'gateway' ? NETWORKS : [ENC];
    let ob: OverlayBed;
    const on = new Map<string, [Container, Container]>(); // network id → [host 1's, host 2's]
    const spawned = new Set<BedProcess>();
    const c = (net: NetworkDef, host: 1 | 2): Container => on.get(net.id)![host - 1]!;

    beforeAll(async () => {
      ob = await createOverlayBed({ hosts: 2, networks: NETWORKS, dataPath, plainPath });
      for (const net of NETWORKS) {
        const pair: Container[] = [];
        for (const host of [1, 2]) {
          const ctr = await ob.container(host, net);
          // No IPv6 chatter (DAD, RS, MLD): the counters and captures compared below stay still without traffic.
          await ob.bed.exec(ctr.ns, [
            'sysctl',
            '-q',
            '-w',
            'net.ipv6.conf.all.disable_ipv6=1',
            'net.ipv6.conf.default.disable_ipv6=1',
          ]);
          pair.push(ctr);
        }
        const [a, b] = pair as [Container, Container];
        // Static neighbours: the pings below need no ARP, so nothing crosses unless a test sends it.
        await ob.bed.exec(a.ns, ['ip', 'neigh', 'replace', b.ip, 'lladdr', b.mac, 'dev', 'eth0']);
        await ob.bed.exec(b.ns, ['ip', 'neigh', 'replace', a.ip, 'lladdr', a.mac, 'dev', 'eth0']);
        on.set(net.id, [a, b]);
      }
    }, 180_000);

    afterAll(async () => {
      await Promise.all([...spawned].map((p) => p.stop(1_000)));
      await ob?.destroy();
    });

    // ── helpers ─────────────────────────────────────────────────────────────────

    /** tcpdump writing a pcap; stop() returns the file's bytes. */
    async function capture(ns: string, name: string, filter: string[] = []): Promise<{ stop(): Promise<Buffer> }> {
      const file = join(ob.dir, `${dataPath}-${name}-${randomBytes(3).toString('hex')}.pcap`);
      const p = ob.bed.spawn(ns, [
        'tcpdump',
        '-i',
        'eth0',
        '-n',
        '-p',
        '-U',
        '--immediate-mode',
        '-s',
        '2048',
        '-w',
        file,
        ...filter,
      ]);
      spawned.add(p);
      void p.exited.then(() => spawned.delete(p));
      await waitUntil(`tcpdump in ${ns}`, () => /listening on/.test(p.stderr()) || p.child.exitCode !== null);
      if (p.child.exitCode !== null) throw new Error(`tcpdump failed in ${ns}: ${p.stderr()}`);
      return {
        async stop() {
          await sleep(300); // let the last packet reach the capture
          await p.stop();
          return existsSync(file) ? readFileSync(file) : Buffer.alloc(0);
        },
      };
    }

    async function send(
      ns: string,
      args: { to: string; port: number; datagrams: Uint8Array[]; bind?: string },
      unprivileged: boolean,
    ): Promise<SenderReport> {
      const plumbing = ob.hosts[0]!.plumbing;
      const json = JSON.stringify({
        ...args,
        datagrams: args.datagrams.map((d) => Buffer.from(d).toString('hex')),
        hostAddress: plumbing.hostAddress,
        vtepAddress: plumbing.vtepAddress,
        deliveryPort: VTEP_DELIVERY_PORT,
        // Every gateway address the VTEP could send cleartext frames to (host indexes 1..HOST_INDEX_MAX).
        peerNet: plumbing.peerNet,
        peers: HOST_INDEX_MAX,
        gatewayPort: VTEP_GATEWAY_PORT,
      });
      const r = await ob.bed.exec(ns, [...(unprivileged ? UNPRIVILEGED : []), PYTHON, '-c', SENDER, json]);
      return JSON.parse(r.stdout.trim()) as SenderReport;
    }

    function expectPowerless(r: SenderReport): void {
      expect(r.Uid.split(/\s+/)).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]);
      for (const set of [r.CapInh, r.CapPrm, r.CapEff, r.CapBnd, r.CapAmb]) expect(set).toBe('0000000000000000');
      expect(r.NoNewPrivs).toBe('1');
      // The premises the defence rests on, as this very process finds them.
      expect(r.bindDeliveryPort, `bind ${VTEP_DELIVERY_PORT}`).toBe('EACCES');
      expect(r.bindVtepAddress, 'bind the VTEP address').toBe('EADDRNOTAVAIL');
      // No gateway address can be taken over (say while the gateway is down) to read the VTEP's cleartext frames.
      expect(r.bindGateways, `bind the ${HOST_INDEX_MAX} gateway addresses at ${VTEP_GATEWAY_PORT}`).toEqual([
        'EACCES',
      ]);
      expect(r.bindGatewayPortAnywhere, `bind 0.0.0.0:${VTEP_GATEWAY_PORT}`).toBe('EACCES');
      expect(r.rawSocket, 'raw socket').toBe('EPERM');
      expect(r.sent).toBe(N);
    }

    /** VXLAN (I flag, vni) | Ethernet | IPv4 | UDP to PROBE_PORT | marker, from `src` to `dst` (both containers). */
    function forged(vni: number, src: Container, dst: Container, marker: string): Uint8Array[] {
      const frame = udpFrame(src, dst, PROBE_PORT, marker);
      const vxlan = new Uint8Array(8 + frame.length);
      vxlan.set(encodeVxlanHeader(vni), 0);
      vxlan.set(frame, 8);
      return Array.from({ length: N }, () => vxlan);
    }

    const unauthorized = (s: GatewayStatus): number => s.unattributedDrops['unauthorized-source'] ?? 0;
    const pairOf = (s: GatewayStatus, peer: string, net: NetworkDef): PairStatus => {
      const p = s.pairs.find((x) => x.peer === peer && x.vni === net.vni);
      if (!p) throw new Error(`${s.host} has no pair (${peer}, ${net.vni})`);
      return p;
    };
    const opened = (p: PairStatus): number => p.inbound.reduce((sum, sa) => sum + sa.opened, 0);
    const fromHost1 = (pcap: Buffer): UdpDatagram[] =>
      (pcap.length > 0 ? udpDatagrams(parsePcap(pcap)) : []).filter((d) => d.src === ob.hosts[0]!.underlayAddress);
    const marker = (what: string): string => `veil-injection-${dataPath}-${what}-${randomBytes(6).toString('hex')}`;

    /** Plain VXLAN of the plain network carrying `mark`, sent unprivileged in host 1 to `to`:4789; what host 1's container saw. */
    async function plainToHost(to: string, mark: string): Promise<Buffer> {
      const cap = await capture(c(PLAIN, 1).ns, mark);
      expectPowerless(
        await send(
          ob.hosts[0]!.netns,
          { to, port: 4789, datagrams: forged(PLAIN.vni, c(PLAIN, 2), c(PLAIN, 1), mark) },
          true,
        ),
      );
      return cap.stop();
    }

    async function ping(from: Container, to: Container): Promise<boolean> {
      return (
        (
          await ob.bed.exec(from.ns, ['ping', '-n', '-q', '-c', '2', '-i', '0.2', '-W', '2', to.ip], {
            allowFail: true,
          })
        ).code === 0
      );
    }

    // ── tests ───────────────────────────────────────────────────────────────────

    it("control: the genuine path works (the VTEP admits the gateway's own deliveries)", async () => {
      for (const net of NETWORKS) {
        expect(await ping(c(net, 1), c(net, 2)), `${net.id} 1→2`).toBe(true);
        expect(await ping(c(net, 2), c(net, 1)), `${net.id} 2→1`).toBe(true);
      }
    }, 60_000);

    it('(a) forged VXLAN sent to the gateway addresses by an unprivileged process is dropped, counted, and never leaves the host', async () => {
      const h1 = ob.hosts[0]!;
      const port = VTEP_GATEWAY_PORT;
      await sleep(500); // the pings' last replies are in
      const before1 = await ob.status(1);
      const before2 = await ob.status(2);
      const markers = new Map(NETWORKS.map((net) => [net.id, marker(`a-${net.id}`)]));
      const captures = await Promise.all([
        capture(ob.hosts[1]!.netns, 'a-underlay', ['udp']),
        ...NETWORKS.map((net) => capture(c(net, 2).ns, `a-${net.id}`)),
      ]);
      const reports: SenderReport[] = [];
      for (const net of NETWORKS) {
        reports.push(
          await send(
            h1.netns,
            {
              to: gatewayAddress(h1.plumbing.peerNet, 2),
              port,
              datagrams: forged(net.vni, c(net, 1), c(net, 2), markers.get(net.id)!),
            },
            true,
          ),
        );
      }
      // Settled when every drop is counted (or, if the gateway let them through, soon enough: the checks below say what leaked).
      await waitUntil(
        'the drops to be counted',
        async () => unauthorized(await ob.status(1)) - unauthorized(before1) >= NETWORKS.length * N,
        3_000,
      ).catch(() => undefined);
      const [underlay, ...containers] = await Promise.all(captures.map((cap) => cap.stop()));
      const after1 = await ob.status(1);
      const after2 = await ob.status(2);

      for (const r of reports) expectPowerless(r);
      // Nothing delivered at host 2, nothing on the underlay, nothing sealed, forwarded or opened.
      NETWORKS.forEach((net, i) =>
        expect(containers[i]!.includes(markers.get(net.id)!), `${net.id} marker at host 2's container`).toBe(false),
      );
      expect(pairOf(after1, 'h2', ENC).outbound!.sealed).toBe(pairOf(before1, 'h2', ENC).outbound!.sealed);
      for (const net of RELAYED)
        expect(pairOf(after1, 'h2', net).txPackets, `${net.id} tx at host 1`).toBe(
          pairOf(before1, 'h2', net).txPackets,
        );
      expect(fromHost1(underlay!), 'datagrams host 1 → host 2 on the underlay').toEqual([]);
      expect(opened(pairOf(after2, 'h1', ENC))).toBe(opened(pairOf(before2, 'h1', ENC)));
      for (const net of RELAYED)
        expect(pairOf(after2, 'h1', net).rxPackets, `${net.id} rx at host 2`).toBe(
          pairOf(before2, 'h1', net).rxPackets,
        );
      expect(unauthorized(after1) - unauthorized(before1), 'unauthorized-source at host 1').toBe(NETWORKS.length * N);
      console.log(
        `[injection ${dataPath}] (a) host 1 unauthorized-source +${unauthorized(after1) - unauthorized(before1)}; ` +
          `host 1 → host 2 underlay datagrams: ${fromHost1(underlay!).length}; host 2 opened +${opened(pairOf(after2, 'h1', ENC)) - opened(pairOf(before2, 'h1', ENC))}`,
      );
    }, 60_000);

    it("(a) control: the same datagrams from the VTEP's address (root in the vtep namespace) are sealed, carried and delivered", async () => {
      const h1 = ob.hosts[0]!;
      const before1 = await ob.status(1);
      const before2 = await ob.status(2);
      const markers = new Map(RELAYED.map((net) => [net.id, marker(`a-control-${net.id}`)]));
      const captures = await Promise.all([
        capture(ob.hosts[1]!.netns, 'a-control-underlay', ['udp']),
        ...RELAYED.map((net) => capture(c(net, 2).ns, `a-control-${net.id}`)),
      ]);
      for (const net of RELAYED) {
        const r = await send(
          h1.vtepNetns,
          {
            to: gatewayAddress(h1.plumbing.peerNet, 2),
            port: VTEP_GATEWAY_PORT,
            bind: h1.plumbing.vtepAddress,
            datagrams: forged(net.vni, c(net, 1), c(net, 2), markers.get(net.id)!),
          },
          false,
        );
        expect(r.sent).toBe(N);
      }
      await waitUntil('host 2 to receive them', async () => {
        const now = await ob.status(2);
        return RELAYED.every((net) => pairOf(now, 'h1', net).rxPackets - pairOf(before2, 'h1', net).rxPackets >= N);
      });
      const [underlay, ...containers] = await Promise.all(captures.map((cap) => cap.stop()));
      const after1 = await ob.status(1);
      const after2 = await ob.status(2);

      expect(unauthorized(after1)).toBe(unauthorized(before1));
      expect(pairOf(after1, 'h2', ENC).outbound!.sealed - pairOf(before1, 'h2', ENC).outbound!.sealed).toBe(N);
      const carried = fromHost1(underlay!);
      // (At least one datagram each: UDP GSO may carry several as one on the veths the capture sees.)
      expect(carried.filter((d) => d.dstPort === 4500).length, 'ESP host 1 → host 2').toBeGreaterThan(0);
      if (plainPath === 'gateway')
        expect(
          carried.filter((d) => d.dstPort === 4789 && Buffer.from(d.payload).includes(markers.get(PLAIN.id)!)).length,
          'plain VXLAN host 1 → host 2',
        ).toBeGreaterThan(0);
      expect(opened(pairOf(after2, 'h1', ENC)) - opened(pairOf(before2, 'h1', ENC))).toBe(N);
      RELAYED.forEach((net, i) =>
        expect(containers[i]!.includes(markers.get(net.id)!), `${net.id} marker at host 2's container`).toBe(true),
      );
    }, 60_000);

    it("(b) plain VXLAN sent straight to the VTEP by an unprivileged process is dropped and counted by the vtep namespace's firewall", async () => {
      const h1 = ob.hosts[0]!;
      const before = await h1.plumbing.vtepFirewallDrops();
      const statusBefore = await ob.status(1);
      const markers = new Map(NETWORKS.map((net) => [net.id, marker(`b-${net.id}`)]));
      const captures = await Promise.all(NETWORKS.map((net) => capture(c(net, 1).ns, `b-${net.id}`)));
      const reports: SenderReport[] = [];
      for (const net of NETWORKS) {
        // A frame "from" host 2's container to host 1's own container, as if it had come through the gateway.
        reports.push(
          await send(
            h1.netns,
            {
              to: h1.plumbing.vtepAddress,
              port: 4789,
              datagrams: forged(net.vni, c(net, 2), c(net, 1), markers.get(net.id)!),
            },
            true,
          ),
        );
      }
      const containers = await Promise.all(captures.map((cap) => cap.stop()));
      const after = await h1.plumbing.vtepFirewallDrops();

      for (const r of reports) expectPowerless(r);
      expect(after.packets - before.packets, `nft counter ${VTEP_FIREWALL_COUNTER}`).toBe(NETWORKS.length * N);
      NETWORKS.forEach((net, i) =>
        expect(containers[i]!.includes(markers.get(net.id)!), `${net.id} marker at host 1's container`).toBe(false),
      );
      // They never reached the gateway either: its counters did not move.
      expect(unauthorized(await ob.status(1))).toBe(unauthorized(statusBefore));
      // The genuine path is still open.
      expect(await ping(c(ENC, 2), c(ENC, 1))).toBe(true);
      console.log(
        `[injection ${dataPath}] (b) nft ${VTEP_FIREWALL_COUNTER}: ${before.packets} → ${after.packets} packets (${after.bytes - before.bytes} bytes)`,
      );
    }, 60_000);

    it('(b) control: without the firewall the same unprivileged sends reach the container (none with a TAP port); ensureHost puts it back', async () => {
      const h1 = ob.hosts[0]!;
      const tap = (await ob.status(1)).networks.find((n) => n.vni === ENC.vni)?.vtep?.kind === 'tap';
      expect(tap, 'the native path has a TAP port, the TypeScript path the kernel device').toBe(dataPath === 'native');
      await ob.bed.exec(h1.vtepNetns, ['nft', 'delete', 'table', 'inet', VTEP_FIREWALL_TABLE]);
      try {
        const open = marker('b-control');
        let cap = await capture(c(ENC, 1).ns, 'b-control');
        expectPowerless(
          await send(
            h1.netns,
            { to: h1.plumbing.vtepAddress, port: 4789, datagrams: forged(ENC.vni, c(ENC, 2), c(ENC, 1), open) },
            true,
          ),
        );
        expect(
          (await cap.stop()).includes(open),
          tap ? 'a TAP port: no VTEP to send VXLAN to' : 'the VTEP without its firewall takes VXLAN from anyone',
        ).toBe(!tap);

        await h1.plumbing.ensureHost();
        const closed = marker('b-restored');
        const before = await h1.plumbing.vtepFirewallDrops();
        cap = await capture(c(ENC, 1).ns, 'b-restored');
        expectPowerless(
          await send(
            h1.netns,
            { to: h1.plumbing.vtepAddress, port: 4789, datagrams: forged(ENC.vni, c(ENC, 2), c(ENC, 1), closed) },
            true,
          ),
        );
        expect((await cap.stop()).includes(closed)).toBe(false);
        expect((await h1.plumbing.vtepFirewallDrops()).packets - before.packets).toBe(N);
        expect(await ping(c(ENC, 2), c(ENC, 1))).toBe(true);
      } finally {
        await h1.plumbing.ensureHost();
      }
    }, 60_000);

    (plainPath === 'kernel' ? it : () => undefined)(
      "(c) plain VXLAN sent to the host's own UDP 4789 by an unprivileged process is dropped and counted by the underlay firewall",
      async () => {
        const h1 = ob.hosts[0]!;
        const before = await ob.plain(1, PLAIN.vni);
        const mark = marker('c');
        // As if host 2's container had sent it: to the underlay address, and to loopback.
        const seen = [await plainToHost(h1.underlayAddress, mark), await plainToHost('127.0.0.1', mark)];
        const after = await ob.plain(1, PLAIN.vni);

        expect(after.notAPeer.packets - before.notAPeer.packets, 'nft counter vxlan_not_peer').toBe(2 * N);
        expect(after.rxPackets, 'the device received nothing').toBe(before.rxPackets);
        for (const pcap of seen) expect(pcap.includes(mark), "marker at host 1's container").toBe(false);
        expect(await ping(c(PLAIN, 2), c(PLAIN, 1))).toBe(true);
        console.log(
          `[injection ${dataPath}] (c) nft vxlan_not_peer: ${before.notAPeer.packets} → ${after.notAPeer.packets} packets`,
        );
      },
      60_000,
    );

    (plainPath === 'kernel' ? it : () => undefined)(
      '(c) control: with the underlay firewall letting everything in, the same sends reach the container; ensureHost closes it again',
      async () => {
        const h1 = ob.hosts[0]!;
        await ob.bed.exec(h1.netns, [
          'nft',
          'insert',
          'rule',
          'inet',
          UNDERLAY_FIREWALL_TABLE,
          'input',
          'udp',
          'dport',
          '4789',
          'accept',
        ]);
        try {
          const open = marker('c-control');
          const seen = await plainToHost(h1.underlayAddress, open);
          expect(seen.includes(open), 'the kernel VXLAN socket takes VXLAN from anyone').toBe(true);
        } finally {
          await h1.plumbing.ensureHost();
        }
        const before = await ob.plain(1, PLAIN.vni);
        const closed = marker('c-restored');
        expect((await plainToHost(h1.underlayAddress, closed)).includes(closed)).toBe(false);
        expect((await ob.plain(1, PLAIN.vni)).notAPeer.packets - before.notAPeer.packets).toBe(N);
        // The peers stayed in the set through ensureHost: the genuine path works.
        expect(await ping(c(PLAIN, 2), c(PLAIN, 1))).toBe(true);
      },
      60_000,
    );
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
