// bench/overlay: iperf3 TCP through each overlay between two hosts (namespaces) on one machine,
// interleaved rounds in the same run, plus ping RTT. Prints Gbit/s and the ratio of veil
// encrypted to each. Reference peers: kernel VXLAN, wireguard-go, OpenVPN (AES-128-GCM, TLS p2p).
//   VEIL_BENCH_ROUNDS (3), VEIL_BENCH_SECONDS (10), VEIL_BENCH_ONLY (comma list of row names),
//   VEIL_BENCH_DATA_PATH (native | ts; default: the gateway's default, native when built),
//   VEIL_BENCH_PLAIN_PATH (kernel | gateway; default: the gateway's default, kernel)
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BedProcess } from '../test/system/netns/bed.js';
import { DEFAULT_PLAIN_PATH, isPlainPath } from '../src/model/plain-path.js';
import { createOverlayBed, type NetworkDef, type OverlayBed } from '../test/system/netns/overlay-bed.js';

const ROUNDS = Number(process.env.VEIL_BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.VEIL_BENCH_SECONDS ?? 10);
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
  pingMs?: number;
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
    const run = (argv: string[]) => sh(ob, h.netns, argv);
    await run([
      'ip',
      'link',
      'add',
      'kvx',
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
    await run(['ip', 'link', 'add', 'kve', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c]);
    await run(['ip', 'link', 'set', 'kve', 'master', 'kbr', 'up']);
    await run(['ip', 'link', 'set', 'kbr', 'up']);
    await sh(ob, c, ['ip', 'link', 'set', 'eth0', 'mtu', '1450', 'up']);
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
  const keys = [1, 2].map(() => execFileSync('wg', ['genkey'], { encoding: 'utf8' }).trim());
  const pubs = keys.map((k) => execFileSync('wg', ['pubkey'], { input: k, encoding: 'utf8' }).trim());
  for (const i of [0, 1]) {
    const h = ob.hosts[i]!;
    const dev = `${ob.bed.prefix}w${i + 1}`; // distinct names: wireguard-go's control sockets share /var/run/wireguard
    const keyFile = join(ob.dir, `wg${i}.key`);
    writeFileSync(keyFile, keys[i]!, { mode: 0o600 });
    procs.push(ob.bed.spawn(h.netns, ['wireguard-go', '-f', dev]));
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
    await sh(ob, h.netns, ['ip', 'link', 'set', dev, 'up']);
  }
  return {
    name: 'wireguard-go',
    client: ob.hosts[0]!.netns,
    server: ob.hosts[1]!.netns,
    serverIp: '10.77.0.2',
    gbps: [],
    retransmits: [],
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
  };
}

async function iperf(ob: OverlayBed, row: Row): Promise<void> {
  const server = ob.bed.spawn(row.server, ['iperf3', '-s', '-1', '--forceflush', '-B', row.serverIp]);
  await server.waitFor(/Server listening/, 10_000);
  const out = await ob.bed.exec(row.client, ['iperf3', '-c', row.serverIp, '-t', String(SECONDS), '-J'], {
    allowFail: true,
    timeoutMs: (SECONDS + 30) * 1000,
  });
  await server.stop();
  try {
    const end = JSON.parse(out.stdout).end;
    row.gbps.push(end.sum_received.bits_per_second / 1e9);
    row.retransmits.push(end.sum_sent.retransmits ?? 0);
  } catch {
    row.gbps.push(0);
    console.log(`  ${row.name}: iperf3 failed: ${out.stderr.slice(0, 200)}`);
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
    ...(dataPath ? { dataPath } : {}),
  });
  const procs: BedProcess[] = [];
  try {
    const [e1, e2, p1, p2] = [
      await ob.container(1, ENC),
      await ob.container(2, ENC),
      await ob.container(1, PLAIN),
      await ob.container(2, PLAIN),
    ];
    const rows: Row[] = [
      { name: 'veil encrypted', client: e1.ns, server: e2.ns, serverIp: e2.ip, gbps: [], retransmits: [] },
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
      `bench/overlay: iperf3 TCP, ${SECONDS} s x ${ROUNDS} rounds, interleaved; veil data path: ${path}, plain path: ${plainPath}; node ${process.version}`,
    );
    for (let r = 1; r <= ROUNDS; r++) {
      for (const row of rows) {
        await iperf(ob, row);
        console.log(
          `  round ${r} ${row.name.padEnd(20)} ${row.gbps.at(-1)!.toFixed(2)} Gbit/s  retransmits ${row.retransmits.at(-1) ?? '-'}`,
        );
      }
    }
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
