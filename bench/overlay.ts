// bench/overlay: iperf3 TCP through each overlay between two hosts (namespaces) on one machine,
// one stream and 8 (-P 8), interleaved rounds in the same run; UDP packets per second at 64 and 1400
// bytes; ping RTT; and the CPU seconds per gigabit of the tunnel's own processes (veil's gateways,
// wireguard-go, OpenVPN; kernel VXLAN has none). Prints Gbit/s and the ratio of veil encrypted to each.
// Reference peers: kernel VXLAN, wireguard-go, OpenVPN (AES-128-GCM, TLS p2p).
//   VEIL_BENCH_ROUNDS (3), VEIL_BENCH_SECONDS (10), VEIL_BENCH_ONLY (comma list of row names),
//   VEIL_BENCH_DATA_PATH (native | ts; default: the gateway's default, native when built),
//   VEIL_BENCH_PLAIN_PATH (kernel | gateway; default: the gateway's default, kernel),
//   VEIL_BENCH_UNDERLAY_MTU (1500; 9000 for a jumbo underlay), VEIL_BENCH_UDP_SECONDS (5)
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BedProcess } from '../test/system/netns/bed.js';
import { DEFAULT_PLAIN_PATH, isPlainPath } from '../src/model/plain-path.js';
import { createOverlayBed, type NetworkDef, type OverlayBed } from '../test/system/netns/overlay-bed.js';

const ROUNDS = Number(process.env.VEIL_BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.VEIL_BENCH_SECONDS ?? 10);
const UDP_SECONDS = Number(process.env.VEIL_BENCH_UDP_SECONDS ?? 5);
const UNDERLAY_MTU = Number(process.env.VEIL_BENCH_UNDERLAY_MTU ?? 1500);
const ENC: NetworkDef = { id: 'enc', index: 1, vni: 4096, encrypted: true, subnet: '10.10.0' };
const PLAIN: NetworkDef = { id: 'plain', index: 2, vni: 4097, encrypted: false, subnet: '10.20.0' };

interface Row {
  name: string;
  /** Namespaces and address for iperf3: client ns, server ns, server IP. */
  client: string;
  server: string;
  serverIp: string;
  gbps: number[];
  retransmits: number[];
  /** -P 8: the sum of eight streams. */
  gbpsParallel?: number[];
  /** CPU seconds of the tunnel's processes per gigabit received, one per single-stream run. */
  cpuPerGbit?: number[];
  /** UDP packets per second received, by datagram size. */
  udpPps?: Map<number, number>;
  /** The tunnel's own processes on both hosts (none: the kernel's work is not counted). */
  pids?: () => number[];
  pingMs?: number;
}

/** CPU seconds (user + system, all threads) a process has used. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in USER_HZ ticks
  } catch {
    return NaN;
  }
}

async function sh(ob: OverlayBed, ns: string, argv: string[]): Promise<string> {
  return (await ob.bed.exec(ns, argv, { timeoutMs: 60_000 })).stdout;
}

/** Kernel VXLAN host to host (port 4790, so it does not collide with the gateways' 4789), containers bridged to it. */
async function kernelRow(ob: OverlayBed): Promise<Row> {
  const names: string[] = [];
  for (const i of [1, 2]) {
    const h = ob.hosts[i - 1]!;
    const peer = ob.hosts[2 - i]!;
    const c = await ob.bed.namespace(`k${i}`);
    names.push(c);
    // The overlay MTU of kernel VXLAN on this underlay (RFC 7348 §4: 50 bytes), as veil's plain networks.
    const mtu = String(UNDERLAY_MTU - 50);
    const run = (argv: string[]) => sh(ob, h.netns, argv);
    await run([
      'ip',
      'link',
      'add',
      'kvx',
      'mtu',
      mtu,
      'type',
      'vxlan',
      'id',
      '5000',
      'local',
      h.underlayAddress,
      'remote',
      peer.underlayAddress,
      'dstport',
      '4790',
    ]);
    await run(['ip', 'link', 'add', 'kbr', 'type', 'bridge']);
    await run(['ip', 'link', 'set', 'kvx', 'master', 'kbr', 'up']);
    await run(['ip', 'link', 'add', 'kve', 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', mtu, 'netns', c]);
    await run(['ip', 'link', 'set', 'kve', 'master', 'kbr', 'up']);
    await run(['ip', 'link', 'set', 'kbr', 'up']);
    await sh(ob, c, ['ip', 'link', 'set', 'eth0', 'mtu', mtu, 'up']);
    await sh(ob, c, ['ip', 'addr', 'add', `10.50.0.${i}/24`, 'dev', 'eth0']);
  }
  return {
    name: 'kernel VXLAN',
    client: names[0]!,
    server: names[1]!,
    serverIp: '10.50.0.2',
    gbps: [],
    retransmits: [],
  };
}

async function wireguardRow(ob: OverlayBed, procs: BedProcess[]): Promise<Row> {
  const wgPids: number[] = [];
  const keys = [1, 2].map(() => execFileSync('wg', ['genkey'], { encoding: 'utf8' }).trim());
  const pubs = keys.map((k) => execFileSync('wg', ['pubkey'], { input: k, encoding: 'utf8' }).trim());
  for (const i of [0, 1]) {
    const h = ob.hosts[i]!;
    const dev = `${ob.bed.prefix}w${i + 1}`; // distinct names: wireguard-go's control sockets share /var/run/wireguard
    const keyFile = join(ob.dir, `wg${i}.key`);
    writeFileSync(keyFile, keys[i]!, { mode: 0o600 });
    procs.push(ob.bed.spawn(h.netns, ['wireguard-go', '-f', dev]));
    wgPids.push(procs.at(-1)!.pid);
    for (let t = 0; t < 100; t++) {
      if ((await ob.bed.exec(h.netns, ['ip', 'link', 'show', dev], { allowFail: true })).code === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const other = ob.hosts[1 - i]!;
    await sh(ob, h.netns, [
      'wg',
      'set',
      dev,
      'listen-port',
      '51820',
      'private-key',
      keyFile,
      'peer',
      pubs[1 - i]!,
      'endpoint',
      `${other.underlayAddress}:51820`,
      'allowed-ips',
      `10.77.0.${2 - i}/32`,
    ]);
    await sh(ob, h.netns, ['ip', 'addr', 'add', `10.77.0.${i + 1}/24`, 'dev', dev]);
    // WireGuard's own overhead is 80 bytes over IPv4 (1420 on 1500): the same underlay for every row.
    await sh(ob, h.netns, ['ip', 'link', 'set', dev, 'mtu', String(UNDERLAY_MTU - 80), 'up']);
  }
  return {
    name: 'wireguard-go',
    client: ob.hosts[0]!.netns,
    server: ob.hosts[1]!.netns,
    serverIp: '10.77.0.2',
    gbps: [],
    retransmits: [],
    pids: () => wgPids,
  };
}

/** OpenVPN in TLS peer-to-peer mode (its static-key mode refuses GCM), AES-128-GCM data channel. */
async function openvpnRow(ob: OverlayBed, procs: BedProcess[]): Promise<Row> {
  const d = ob.dir;
  const ssl = (args: string[]) => execFileSync('openssl', args, { cwd: d, stdio: 'ignore' });
  ssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '1',
    '-subj',
    '/CN=bench-ca',
  ]);
  for (const n of ['s', 'c']) {
    ssl([
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      `${n}.key`,
      '-out',
      `${n}.csr`,
      '-subj',
      `/CN=${n}`,
    ]);
    ssl([
      'x509',
      '-req',
      '-in',
      `${n}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${n}.crt`,
      '-days',
      '1',
    ]);
  }
  for (const i of [0, 1]) {
    const h = ob.hosts[i]!;
    const other = ob.hosts[1 - i]!;
    const n = i === 0 ? 's' : 'c';
    procs.push(
      ob.bed.spawn(h.netns, [
        'openvpn',
        '--dev',
        `${ob.bed.prefix}o${i + 1}`,
        '--dev-type',
        'tun',
        '--proto',
        'udp',
        '--local',
        h.underlayAddress,
        '--lport',
        '1194',
        '--remote',
        other.underlayAddress,
        '--rport',
        '1194',
        '--ifconfig',
        `10.88.0.${i + 1}`,
        `10.88.0.${2 - i}`,
        i === 0 ? '--tls-server' : '--tls-client',
        '--dh',
        'none',
        '--ca',
        join(d, 'ca.crt'),
        '--cert',
        join(d, `${n}.crt`),
        '--key',
        join(d, `${n}.key`),
        '--data-ciphers',
        'AES-128-GCM',
        '--cipher',
        'AES-128-GCM',
        '--verb',
        '3',
      ]),
    );
  }
  await procs.at(-1)!.waitFor(/Initialization Sequence Completed/, 30_000);
  await procs.at(-2)!.waitFor(/Initialization Sequence Completed/, 30_000);
  return {
    name: 'OpenVPN AES-128-GCM',
    client: ob.hosts[0]!.netns,
    server: ob.hosts[1]!.netns,
    serverIp: '10.88.0.2',
    gbps: [],
    retransmits: [],
    pids: () => [procs.at(-1)!.pid, procs.at(-2)!.pid],
  };
}

/** One iperf3 run: TCP (one stream or `parallel`), or UDP at `udpSize` bytes per datagram, as fast as it goes. */
async function iperf3(
  ob: OverlayBed,
  row: Row,
  how: { parallel?: number; udpSize?: number },
): Promise<{ end: any; cpu: number; seconds: number } | undefined> {
  const server = ob.bed.spawn(row.server, ['iperf3', '-s', '-1', '--forceflush', '-B', row.serverIp]);
  await server.waitFor(/Server listening/, 10_000);
  const seconds = how.udpSize ? UDP_SECONDS : SECONDS;
  const args = ['iperf3', '-c', row.serverIp, '-t', String(seconds), '-J'];
  if (how.parallel) args.push('-P', String(how.parallel));
  if (how.udpSize) args.push('-u', '-b', '0', '-l', String(how.udpSize));
  const pids = row.pids?.() ?? [];
  const cpu0 = pids.reduce((a, p) => a + cpuSeconds(p), 0);
  const out = await ob.bed.exec(row.client, args, { allowFail: true, timeoutMs: (seconds + 30) * 1000 });
  const cpu = pids.reduce((a, p) => a + cpuSeconds(p), 0) - cpu0;
  await server.stop();
  try {
    return { end: JSON.parse(out.stdout).end, cpu, seconds };
  } catch {
    console.log(`  ${row.name}: iperf3 ${JSON.stringify(how)} failed: ${out.stderr.slice(0, 200)}`);
    return undefined;
  }
}

async function iperf(ob: OverlayBed, row: Row): Promise<void> {
  const one = await iperf3(ob, row, {});
  row.gbps.push(one ? one.end.sum_received.bits_per_second / 1e9 : 0);
  row.retransmits.push(one?.end.sum_sent.retransmits ?? 0);
  if (one && row.pids) (row.cpuPerGbit ??= []).push(one.cpu / ((one.end.sum_received.bytes * 8) / 1e9));
  const eight = await iperf3(ob, row, { parallel: 8 });
  (row.gbpsParallel ??= []).push(eight ? eight.end.sum_received.bits_per_second / 1e9 : 0);
}

/** UDP packets per second that arrived (sent − lost, over the run), at 64 and 1400 bytes of payload. */
async function udp(ob: OverlayBed, row: Row): Promise<void> {
  for (const size of [64, 1400]) {
    const r = await iperf3(ob, row, { udpSize: size });
    const sum = r?.end.sum;
    (row.udpPps ??= new Map()).set(size, sum ? (sum.packets - sum.lost_packets) / sum.seconds : 0);
  }
}

async function ping(ob: OverlayBed, row: Row): Promise<void> {
  const out = await ob.bed.exec(row.client, ['ping', '-n', '-q', '-c', '50', '-i', '0.02', row.serverIp], {
    allowFail: true,
  });
  const m = /= [\d.]+\/([\d.]+)\//.exec(out.stdout);
  if (m) row.pingMs = Number(m[1]);
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

async function main(): Promise<void> {
  const dataPath = process.env.VEIL_BENCH_DATA_PATH as 'native' | 'ts' | undefined;
  const plainPath = process.env.VEIL_BENCH_PLAIN_PATH ?? DEFAULT_PLAIN_PATH;
  if (!isPlainPath(plainPath)) throw new Error(`VEIL_BENCH_PLAIN_PATH must be kernel or gateway, got ${plainPath}`);
  const ob = await createOverlayBed({
    hosts: 2,
    networks: [ENC, PLAIN],
    plainPath,
    underlayMtu: UNDERLAY_MTU,
    ...(dataPath ? { dataPath } : {}),
  });
  const gatewayPids = () => ob.gateways.map((g) => g.pid);
  const procs: BedProcess[] = [];
  try {
    const [e1, e2, p1, p2] = [
      await ob.container(1, ENC),
      await ob.container(2, ENC),
      await ob.container(1, PLAIN),
      await ob.container(2, PLAIN),
    ];
    const rows: Row[] = [
      {
        name: 'veil encrypted',
        client: e1.ns,
        server: e2.ns,
        serverIp: e2.ip,
        gbps: [],
        retransmits: [],
        pids: gatewayPids,
      },
      // On the kernel plain path the gateways carry none of it (their CPU is ~0 and not shown).
      { name: 'veil plain', client: p1.ns, server: p2.ns, serverIp: p2.ip, gbps: [], retransmits: [] },
      await kernelRow(ob),
      await wireguardRow(ob, procs),
      await openvpnRow(ob, procs),
    ].filter(
      (r) => !process.env.VEIL_BENCH_ONLY || process.env.VEIL_BENCH_ONLY.split(',').some((n) => r.name.startsWith(n)),
    );
    for (const row of rows) await ping(ob, row);
    const path =
      JSON.parse(
        ob.gateways[0]!.stdout()
          .split('\n')
          .find((l) => l.includes('gateway ready')) ?? '{}',
      ).dataPath ?? '?';
    console.log(
      `bench/overlay: iperf3 TCP, ${SECONDS} s x ${ROUNDS} rounds, interleaved; underlay MTU ${UNDERLAY_MTU}; veil data path: ${path}, plain path: ${plainPath}; node ${process.version}`,
    );
    for (let r = 1; r <= ROUNDS; r++) {
      for (const row of rows) {
        await iperf(ob, row);
        console.log(
          `  round ${r} ${row.name.padEnd(20)} ${row.gbps.at(-1)!.toFixed(2)} Gbit/s (-P 8: ${row.gbpsParallel!.at(-1)!.toFixed(2)})  retransmits ${row.retransmits.at(-1) ?? '-'}`,
        );
      }
    }
    for (const row of rows) await udp(ob, row);
    const veil = rows.find((r) => r.name === 'veil encrypted');
    console.log('\nrow                    Gbit/s (mean, min-max)     retr/run   ping ms   veil encrypted / row');
    for (const row of rows) {
      const ratio = veil ? (mean(veil.gbps) / mean(row.gbps)).toFixed(2) : '-';
      console.log(
        `${row.name.padEnd(22)} ${mean(row.gbps).toFixed(2).padStart(6)} (${Math.min(...row.gbps).toFixed(2)}-${Math.max(...row.gbps).toFixed(2)})`.padEnd(
          50,
        ) +
          `${Math.round(mean(row.retransmits)).toString().padStart(8)}   ${(row.pingMs ?? NaN).toFixed(3).padStart(7)}   ${ratio}`,
      );
    }
    console.log('\nrow                    -P 8 Gbit/s   UDP kpps 64 B   UDP kpps 1400 B   CPU s/Gbit');
    for (const row of rows) {
      const kpps = (size: number) => ((row.udpPps?.get(size) ?? NaN) / 1e3).toFixed(0).padStart(13);
      console.log(
        `${row.name.padEnd(22)} ${mean(row.gbpsParallel ?? [])
          .toFixed(2)
          .padStart(
            11,
          )}   ${kpps(64)}   ${kpps(1400).padStart(15)}   ${row.cpuPerGbit ? mean(row.cpuPerGbit).toFixed(2).padStart(10) : '         -'}`,
      );
    }
    const kernel = rows.find((r) => r.name === 'kernel VXLAN');
    if (kernel)
      for (const name of ['veil encrypted', 'veil plain']) {
        const row = rows.find((r) => r.name === name);
        if (row) console.log(`${name} / kernel VXLAN: ${(mean(row.gbps) / mean(kernel.gbps)).toFixed(2)}`);
      }
  } finally {
    for (const p of procs) await p.stop();
    await ob.destroy();
  }
}

await main();
