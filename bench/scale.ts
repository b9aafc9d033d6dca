// bench/scale: the control plane at many hosts. N simulated hosts (VEIL_BENCH_HOSTS, 1000) in this
// process against one real etcd on loopback (test/system/support/etcd.ts). Each host has what a
// gateway's control plane has: its own EtcdStore client, a registered host lease kept alive, the
// agent's watch on the whole layout (recording when each network and endpoint first reaches it),
// and the key schedule's EpochInstaller + EpochFollower with a sink that records when it was told
// to install and to activate. Host 1 also runs the KeyScheduleLeader.
//
// Measured, each beside the reference of the same run (one etcd put reaching N watchers, one per
// host's client, rounds interleaved with the measurements so both see the same load):
//   - a new network, created by host 1, visible to every host's watch (p50, p99 over rounds);
//   - a new endpoint, the same way;
//   - a forced rotation: request → every host sealing with the new epoch (p50, p99), and until
//     the next standby epoch is installed on every host (the rest of the rotation's work);
//   - per rotation: etcd puts (etcd_mvcc_put_total), bytes etcd sent to its clients
//     (etcd_network_client_grpc_sent_bytes_total), and CPU of this process (all N hosts and the
//     leader) and of etcd.
// Targets (docs/performance.md "Control plane at scale"): a rotation sealing on all hosts within
// 1 s median; a network visible on all within 5× the reference.
//   VEIL_BENCH_HOSTS (1000), VEIL_BENCH_ROUNDS (5: networks and endpoints), VEIL_BENCH_ROTATIONS (3),
//   VEIL_BENCH_PROFILE (a .cpuprofile path: V8's profile of this process during the rotations)
// Needs /usr/bin/etcd (Debian's etcd-server); no root.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import type { KeyScheduleLeader } from '../src/keyrotation/leader.js';
import { requestRotation, storeRotationRequests } from '../src/keyrotation/requests.js';
import { SHARED_RANGE, keys } from '../src/store/layout.js';
import type { WatchHandle } from '../src/store/types.js';
import { startEtcd } from '../test/system/support/etcd.js';
import {
  fanout,
  median,
  quantile,
  simHost,
  simLeader,
  sleep,
  standbyEverywhere,
  until,
  type SimHost,
} from './support.js';

const HOSTS = Number(process.env.VEIL_BENCH_HOSTS ?? 1000);
const ROUNDS = Number(process.env.VEIL_BENCH_ROUNDS ?? 5);
const ROTATIONS = Number(process.env.VEIL_BENCH_ROTATIONS ?? 3);
const TIMEOUT_MS = 120_000;
/** A file to write a CPU profile of this process during the rotations to (open it in Chrome's DevTools). */
const PROFILE = process.env.VEIL_BENCH_PROFILE;

/** Starts V8's sampling profiler in this process; stop() writes the .cpuprofile and returns its path. */
async function startProfile(): Promise<{ stop(path: string): Promise<string> }> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return {
    async stop(path) {
      const { profile } = await session.post('Profiler.stop');
      writeFileSync(path, JSON.stringify(profile));
      session.disconnect();
      return path;
    },
  };
}

/** until(), with this bench's one timeout. */
const within = <T>(get: () => T | undefined | false | Promise<T | undefined | false>, what: string, everyMs = 5) =>
  until(get, TIMEOUT_MS, what, everyMs);

/** A simulated host with the agent's watch on the whole layout. */
interface WatchingHost extends SimHost {
  watch: WatchHandle;
  /** Layout key → when this host's watch first delivered it. */
  seen: Map<string, number>;
}

/** etcd's own counters (its /metrics): puts, and bytes it sent to clients (watch events included). */
async function etcdCounters(endpoint: string): Promise<{ puts: number; sentBytes: number }> {
  const text = await (await fetch(`${endpoint}/metrics`)).text();
  const sum = (name: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith(name) && !l.startsWith('#'))
      .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  return { puts: sum('etcd_mvcc_put_total'), sentBytes: sum('etcd_network_client_grpc_sent_bytes_total') };
}

/** CPU seconds (user + system) a process has used, from /proc. */
function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

function etcdPid(endpoint: string): number {
  const port = new URL(endpoint).port;
  for (const dir of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${dir}/cmdline`, 'utf8');
      if (cmd.startsWith('/usr/bin/etcd\0') && cmd.includes(`:${port}`)) return Number(dir);
    } catch {
      // a process that ended meanwhile
    }
  }
  throw new Error(`no etcd process listening on ${endpoint}`);
}

async function main(): Promise<void> {
  const etcd = await startEtcd({ members: 1 });
  const endpoint = etcd.endpoints[0]!;
  const etcdProcess = etcdPid(endpoint);
  const hosts: WatchingHost[] = [];
  let leader: KeyScheduleLeader | undefined;
  // The schedule of a test cluster: short grace, so each rotation finds room for the next epoch soon.
  const config = { intervalMs: 3_600_000, ackTimeoutMs: 60_000, graceMs: 200, retiredLingerMs: 200 };
  try {
    const t0 = performance.now();
    for (let i = 0; i < HOSTS; i++) {
      const host = await simHost(etcd.endpoints, i, config, 60);
      const seen = new Map<string, number>();
      const { revision } = await host.store.listNetworks();
      // The agent's view: one watch on the shared layout (src/agent/agent.ts).
      const watch = await host.store.watch(SHARED_RANGE, revision + 1, {
        onEvents: (events) => {
          const now = performance.now();
          for (const e of events) if (e.type === 'put' && !seen.has(e.key)) seen.set(e.key, now);
        },
        onResync: () => undefined,
      });
      hosts.push({ ...host, watch, seen });
    }
    // When the leader finished each step (its log), for the rotation phases below.
    const leaderDone = new Map<string, number>();
    leader = simLeader(hosts[0]!, config, (event, fields) => {
      if (event === 'epoch activated') leaderDone.set(`${fields?.epoch}:${event}`, performance.now());
    });
    console.log(
      `bench/scale: ${HOSTS} simulated hosts registered and watching in ${((performance.now() - t0) / 1e3).toFixed(1)} s`,
    );
    const ref = await fanout(hosts.map((h) => h.store.client));
    const reference: number[] = [];
    let lostRounds = 0;
    const measureReference = async () => {
      for (let i = 0; i < 3; i++) {
        const ms = await ref.measure();
        if (ms === null) lostRounds++;
        else reference.push(ms);
        await sleep(20);
      }
    };
    const h0 = hosts[0]!;
    const everyone = (key: string) => hosts.every((h) => h.seen.has(key));
    const reach = (key: string, start: number) => Math.max(...hosts.map((h) => h.seen.get(key)!)) - start;

    // Networks and endpoints: created by host 1, timed until every host's watch has delivered them.
    const networkMs: number[] = [];
    const endpointMs: number[] = [];
    let encrypted = '';
    for (let r = 0; r < ROUNDS; r++) {
      await measureReference();
      let t = performance.now();
      const net = await h0.store.createNetwork({
        name: `scale-${r}`,
        encrypted: r === 0,
        ipam: { subnet: `10.${210 + r}.0.0/16` },
      });
      if (r === 0) encrypted = net.id;
      await within(() => everyone(keys.network(net.id)), `network ${r} on every host`, 2);
      networkMs.push(reach(keys.network(net.id), t));
      await measureReference();
      t = performance.now();
      const ep = await h0.store.createEndpoint({ networkId: net.id, name: `c${r}`, hostId: h0.id });
      await within(() => everyone(keys.endpoint(net.id, ep.id)), `endpoint ${r} on every host`, 2);
      endpointMs.push(reach(keys.endpoint(net.id, ep.id), t));
    }

    // Forced rotations of the encrypted network.
    await Promise.all(hosts.map((h) => h.follower.start()));
    leader!.start();
    const outboundEverywhere = (epoch: number) => hosts.every((h) => h.activatedAt.has(epoch));
    await within(() => outboundEverywhere(1), 'epoch 1 outbound on every host', 20);
    const rotationMs: number[] = [];
    const perRotation: Array<{ puts: number; sentBytes: number; cpu: number; etcdCpu: number }> = [];
    const requests = storeRotationRequests(h0.store, keys.rotatePrefix());
    // Where a rotation's time goes: when host 1's client saw each epoch state.
    const seenState = new Map<string, number>();
    const fromNow = (await h0.store.getEpochs(encrypted)).revision + 1;
    const phaseWatches = [
      await h0.store.watch(keys.keysPrefix(encrypted), fromNow, {
        onEvents: (events) => {
          for (const e of events) {
            const r = e.value as { epoch?: number; state?: string } | null;
            const at = `${r?.epoch}:${r?.state}`;
            if (e.type === 'put' && !seenState.has(at)) seenState.set(at, performance.now());
          }
        },
        onResync: () => undefined,
      }),
    ];
    const phases: Array<Record<string, number>> = [];
    const profiler = PROFILE ? await startProfile() : null;
    const standby = () => standbyEverywhere(h0.store, encrypted, hosts);
    const standbyMs: number[] = [];
    for (let k = 0; k < ROTATIONS; k++) {
      await within(async () => (await standby()) !== null, 'a standby installed on every host', 20);
      await measureReference();
      const before = {
        ...(await etcdCounters(endpoint)),
        cpu: process.cpuUsage(),
        etcdCpu: processCpuSeconds(etcdProcess),
      };
      const t = performance.now();
      const req = await requestRotation({ store: h0.store, requests }, encrypted, 'bench');
      const target = req.afterEpoch + 1;
      await within(() => outboundEverywhere(target), `epoch ${target} outbound on every host`, 2);
      const sealing = Math.max(...hosts.map((h) => h.activatedAt.get(target)!));
      rotationMs.push(sealing - t);
      const active = seenState.get(`${target}:active`) ?? NaN;
      const activated = leaderDone.get(`${target}:epoch activated`) ?? NaN;
      phases.push({
        'request → leader wrote the activation': activated - t,
        'activation write → seen': active - activated,
        'active → sealing on all': sealing - active,
      });
      // The rotation's whole cost: until the next standby is installed everywhere and the epoch
      // before the new one is retired (its writes, fan-out and CPU).
      await within(async () => (await standby()) === target + 1, `standby ${target + 1} on every host`, 20);
      standbyMs.push(Math.max(...hosts.map((h) => h.installedAt.get(target + 1)!)) - t);
      await within(
        async () =>
          (await h0.store.getEpochs(encrypted)).items.every((r) => r.epoch >= target || r.state === 'retired'),
        'the previous epoch retired',
        20,
      );
      await sleep(500);
      const after = await etcdCounters(endpoint);
      const cpu = process.cpuUsage(before.cpu);
      perRotation.push({
        puts: after.puts - before.puts,
        sentBytes: after.sentBytes - before.sentBytes,
        cpu: (cpu.user + cpu.system) / 1e6,
        etcdCpu: processCpuSeconds(etcdProcess) - before.etcdCpu,
      });
    }
    await Promise.all(phaseWatches.map((w) => w.cancel()));
    if (profiler) console.log(`CPU profile of the rotations (this process): ${await profiler.stop(PROFILE!)}`);
    await ref.close();

    const refMedian = median(reference);
    const row = (name: string, xs: number[]) =>
      `${name.padEnd(46)} n=${String(xs.length).padStart(3)}  p50 ${xs.length ? median(xs).toFixed(0).padStart(6) : '     -'} ms  p99 ${quantile(xs, 0.99).toFixed(0).padStart(6)} ms  ${(median(xs) / refMedian).toFixed(1).padStart(6)}× ref`;
    console.log(`\nbench/scale: ${HOSTS} hosts, one etcd (${endpoint}), node ${process.version}`);
    console.log(row(`reference: one put reaching ${HOSTS} watchers`, reference));
    if (lostRounds > 0) console.log(`reference rounds some watcher never saw (left out): ${lostRounds}`);
    console.log(row('new network visible on every host', networkMs));
    console.log(row('new endpoint visible on every host', endpointMs));
    console.log(row('forced rotation: request → all sealing', rotationMs));
    console.log(row('then the next standby installed on all', standbyMs));
    const avg = (f: (r: (typeof perRotation)[number]) => number) =>
      perRotation.reduce((a, r) => a + f(r), 0) / Math.max(1, perRotation.length);
    console.log(
      `per rotation (mean of ${perRotation.length}): etcd puts ${avg((r) => r.puts).toFixed(0)}, ` +
        `bytes etcd sent to clients ${(avg((r) => r.sentBytes) / 2 ** 20).toFixed(1)} MiB, ` +
        `CPU ${avg((r) => r.cpu).toFixed(1)} s here (${HOSTS} hosts and the leader; ${((avg((r) => r.cpu) / HOSTS) * 1e3).toFixed(1)} ms per host), ` +
        `${avg((r) => r.etcdCpu).toFixed(1)} s in etcd`,
    );
    console.log(
      `rotation phases (p50 ms): ${Object.keys(phases[0] ?? {})
        .map((name) => `${name} ${median(phases.map((p) => p[name]!)).toFixed(0)}`)
        .join('; ')}`,
    );
    console.log(
      `targets: rotation p50 ≤ 1000 ms: ${median(rotationMs) <= 1000 ? 'met' : 'NOT met'}; ` +
        `network p50 ≤ 5× ref: ${median(networkMs) <= 5 * refMedian ? 'met' : 'NOT met'}`,
    );
  } finally {
    await leader?.stop().catch(() => undefined);
    await Promise.all(hosts.map((h) => h.follower.stop().catch(() => undefined)));
    for (const h of hosts) h.installer.close();
    await Promise.all(hosts.map((h) => h.watch.cancel().catch(() => undefined)));
    await Promise.all(hosts.map((h) => h.lease.revoke().catch(() => undefined)));
    await Promise.all(hosts.map((h) => h.store.close().catch(() => undefined)));
    await etcd.stop();
  }
}

await main();
process.exit(0);
