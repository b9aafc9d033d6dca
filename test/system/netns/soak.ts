// The soak: a gateway's life cycle compressed, three gateways on real etcd in the namespace bed,
// traffic running the whole time, while the cycles below run interleaved; before, during and after,
// what each gateway, etcd and the host hold is sampled, so a leak shows as a number (docs/testing.md
// "Soak"). Used by test/system/netns/soak.test.ts (short) and bench/soak.ts (full).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import type { SpawnRun } from '../../../src/host/exec.js';
import { requireNativeAddon } from '../../../src/host/native.js';
import { waitFor } from '../../support/wait.js';
import { tcpTransfer } from '../support/tcp-transfer.js';
import {
  encryptedNetworkWithContainers,
  etcdGetPrefix,
  gatewayDrops,
  pingLoop,
  type ClusterBed,
  type ContainerOnNetwork,
  type PingTally,
} from './cluster-bed.js';

export const SOAK_HOSTS = [1, 2, 3] as const;

/** How many of each cycle; they run interleaved, side by side (see lanes). */
export interface SoakPlan {
  rotations: number;
  networkCycles: number;
  connectCycles: number;
  restarts: number;
  etcdMemberRestarts: number;
  etcdOutages: number;
  /** DNS queries, sent in batches between the other cycles (names, aliases, PTR, forwarded, malformed). */
  dnsQueries: number;
  /** Samples taken over the run (besides the baseline and the end). */
  samples: number;
  seed: number;
  /**
   * How many network and container cycles run side by side (default 1 and 3). Rotations run one after
   * another beside them; restarts and outages have the bed to themselves, spread over the run.
   */
  lanes?: { network?: number; connect?: number };
}

export type CycleKind = 'rotation' | 'network' | 'connect' | 'restart' | 'etcd-member' | 'etcd-outage' | 'dns';

export interface Sample {
  /** Cycles done when it was taken. */
  cycles: number;
  figures: Record<string, number>;
}

export interface FigureReport {
  name: string;
  baseline: number;
  peak: number;
  end: number;
  /** Least-squares slope over the samples taken during the churn, per 100 cycles. */
  slopePer100: number;
}

export interface SoakReport {
  cycles: Record<CycleKind, number>;
  /** From the steady state before the churn (the run's network up) to the same after it. */
  figures: FigureReport[];
  /** Before the run's network existed, and after it was removed again. */
  clean: { before: Record<string, number>; after: Record<string, number> };
  ping: PingTally[];
  /** Transfers failed while a gateway restarted (its containers' links go with a clean stop) are not failures. */
  transfers: { done: number; hashMismatches: number; inRestartWindows: number; failures: string[] };
  /** Each restart: how long the stop took (a clean one that needed SIGKILL: 10 s) and until all were protected. */
  restarts: Array<{ host: number; signal: 'SIGTERM' | 'SIGKILL'; stopMs: number; upMs: number }>;
  /** The last log lines of a gateway whose clean stop took over 5 s. */
  slowStops: string[];
  dns: { sent: number; answered: number };
  /** The links of each host's namespaces by name, at the baseline and at the end (for a diff). */
  links: { baseline: Record<string, string[]>; end: Record<string, string[]> };
  /** Cycles after which a container of the run had lost its address (the first few). */
  lostAddresses: string[];
  drops: Array<Record<string, number>>;
  /** etcd writes (revisions) in IDLE_WINDOW_MS with the churn over: what nothing should be writing. */
  idleWrites: number;
  seconds: number;
}

/**
 * The run's encrypted networks, each with a container on every host and traffic the whole time. The
 * first also serves the container cycles and DNS. Rotations take turns between them: one network's
 * rotations are paced by --key-grace (at most three epoch records, docs/keys.md "Rotation"), two
 * networks' overlap, as every network of a cluster rotates on its own schedule.
 */
const NETS = [
  { name: 'soak', subnet: '10.90.0.0/24', label: 'sk' },
  { name: 'soak2', subnet: '10.92.0.0/24', label: 'sl' },
] as const;
const NET = NETS[0].name;
/** Seconds between echoes of each ping of the rings (one ring per network): 100 echoes/s per host in all. */
export const PING_INTERVAL_S = 0.02;
const TRANSFER_PAUSE_MS = 1_000;
/** How long the run watches an idle cluster for writes at the end: past the lease keepalives and timers. */
const IDLE_WINDOW_MS = 10_000;

/** The figures of one moment: every gateway's own, etcd's, and the host's. */
export async function sample(cb: ClusterBed): Promise<Record<string, number>> {
  const f: Record<string, number> = {};
  for (const h of SOAK_HOSTS) {
    const st = (await cb.api(h, 'GET', '/status')).body as {
      tables: { pairs: number; inboundSas: number; outboundSas: number; retiredSas: number };
      process: { rssBytes: number; heapUsedBytes: number; openFds: number; activeResources: Record<string, number> };
      store: { watches: number; leases: number; campaigns: number };
    };
    f[`h${h}.rssMiB`] = st.process.rssBytes / 2 ** 20;
    f[`h${h}.heapMiB`] = st.process.heapUsedBytes / 2 ** 20;
    f[`h${h}.fds`] = st.process.openFds;
    f[`h${h}.timers`] = st.process.activeResources.Timeout ?? 0;
    f[`h${h}.handles`] = Object.values(st.process.activeResources).reduce((a, b) => a + b, 0);
    f[`h${h}.watches`] = st.store.watches;
    f[`h${h}.leases`] = st.store.leases;
    f[`h${h}.campaigns`] = st.store.campaigns;
    f[`h${h}.pairs`] = st.tables.pairs;
    f[`h${h}.inboundSas`] = st.tables.inboundSas;
    f[`h${h}.outboundSas`] = st.tables.outboundSas;
    f[`h${h}.retiredSas`] = st.tables.retiredSas;
    const host = cb.bed.hosts[h - 1]!;
    const count = async (ns: string, argv: string[], re: RegExp) =>
      (await cb.bed.exec(ns, argv, { allowFail: true })).stdout.split('\n').filter((l) => re.test(l)).length;
    f[`h${h}.links`] =
      (await count(host.netns, ['ip', '-o', 'link'], /^\d+:/)) +
      (await count(host.vtepNetns, ['ip', '-o', 'link'], /^\d+:/));
    // What veil programs (VXLAN destinations, sticky ports) and the ports' own; not what the bridges
    // learn from traffic, which ages out by itself.
    f[`h${h}.fdb`] = await count(host.vtepNetns, ['bridge', 'fdb', 'show'], /\b(dst|static|permanent)\b/);
    f[`h${h}.nftRules`] =
      (await count(host.netns, ['nft', '-a', 'list', 'ruleset'], /# handle \d+$/)) +
      (await count(host.vtepNetns, ['nft', '-a', 'list', 'ruleset'], /# handle \d+$/));
  }
  // The key schedule's leader holds watches of its own, and leadership moves with restarts: the
  // cluster's sum is what must stay put.
  f['gateways.watches'] = SOAK_HOSTS.reduce((a, h) => a + f[`h${h}.watches`]!, 0);
  const { kvs, revision } = await etcdGetPrefix(cb, '/veil/');
  f['etcd.keys'] = kvs.length;
  f['etcd.revision'] = revision;
  f['host.netns'] = cb.bed.namespaces().length;
  f['host.etcNetns'] = readdirSync('/etc/netns').filter((d) => d.startsWith(cb.bed.prefix)).length;
  return f;
}

/** Every link of each host's namespaces, by name (what the counts above count, for a diff). */
export async function linkNames(cb: ClusterBed): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const h of SOAK_HOSTS) {
    const host = cb.bed.hosts[h - 1]!;
    const names: string[] = [];
    for (const [where, ns] of [
      ['host', host.netns],
      ['vtep', host.vtepNetns],
    ] as const) {
      const r = await cb.bed.exec(ns, ['ip', '-o', 'link'], { allowFail: true });
      for (const l of r.stdout.split('\n')) {
        const m = /^\d+: ([^:@]+)/.exec(l);
        if (m) names.push(`${where}:${m[1]}`);
      }
    }
    out[`h${h}`] = names.sort();
  }
  return out;
}

/**
 * The lanes share the bed. A restarting host is the restart's alone: a cycle holds the hosts it
 * touches, a restart waits for them and holds its host, and an etcd outage holds them all. A waiting
 * restart goes before new cycles on its host, so disruptions happen where the plan puts them.
 */
class HostGates {
  #users = new Map<number, number>();
  #held = new Set<number>();
  #wanted = new Set<number>();
  #wake: Array<() => void> = [];

  /** Whether a cycle may start on the host now. */
  free(host: number): boolean {
    return !this.#held.has(host) && !this.#wanted.has(host);
  }

  /** Runs op holding `hosts` shared; `choose` picks them when they are free (it may return undefined: wait). */
  async shared<T>(
    choose: () => readonly number[] | undefined,
    op: (hosts: readonly number[]) => Promise<T>,
  ): Promise<T> {
    let hosts = choose();
    while (!hosts || !hosts.every((h) => this.free(h))) {
      await this.#wait();
      hosts = choose();
    }
    for (const h of hosts) this.#users.set(h, (this.#users.get(h) ?? 0) + 1);
    try {
      return await op(hosts);
    } finally {
      for (const h of hosts) this.#users.set(h, this.#users.get(h)! - 1);
      this.#notify();
    }
  }

  async exclusive<T>(hosts: readonly number[], op: () => Promise<T>): Promise<T> {
    while (hosts.some((h) => this.#wanted.has(h) || this.#held.has(h))) await this.#wait();
    for (const h of hosts) this.#wanted.add(h);
    while (hosts.some((h) => (this.#users.get(h) ?? 0) > 0)) await this.#wait();
    for (const h of hosts) {
      this.#wanted.delete(h);
      this.#held.add(h);
    }
    try {
      return await op();
    } finally {
      for (const h of hosts) this.#held.delete(h);
      this.#notify();
    }
  }

  #wait(): Promise<void> {
    // Also on a timer: a chooser may wait on something other than the gates.
    return new Promise((r) => {
      this.#wake.push(r);
      setTimeout(r, 500);
    });
  }

  #notify(): void {
    for (const wake of this.#wake.splice(0)) wake();
  }
}

const spawnRun = (requireNativeAddon() as { spawnRun: SpawnRun }).spawnRun;

/**
 * A short command in a namespace of the bed, as the gateway runs its own (posix_spawn and nsenter): the
 * cycles run thousands, and a fork of the test process plus `ip netns exec` for each costs more CPU than
 * the gateway's work they check.
 */
async function inNetns(ns: string, argv: string[]): Promise<{ status: number | null; stdout: string }> {
  const r = await spawnRun('nsenter', [`--net=/run/netns/${ns}`, '--', ...argv], new Uint8Array(), 30_000, 1 << 20);
  return { status: r.status, stdout: r.stdout.toString('utf8') };
}

/** A small deterministic generator (the plan's seed orders the cycles). */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
}

/** A node script sending DNS queries over UDP to the container's resolver and counting the answers. */
const DNS_SENDER = `
const dgram = require('node:dgram');
const [server, total, ...names] = process.argv.slice(1);
const s = dgram.createSocket('udp4');
let sent = 0, answered = 0, id = 0;
const enc = (name, type) => {
  const labels = name.split('.').filter(Boolean).map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const h = Buffer.alloc(12); h.writeUInt16BE(++id & 0xffff, 0); h.writeUInt16BE(0x0100, 2); h.writeUInt16BE(1, 4);
  const q = Buffer.alloc(4); q.writeUInt16BE(type, 0); q.writeUInt16BE(1, 2);
  return Buffer.concat([h, ...labels, Buffer.from([0]), q]);
};
s.on('message', () => answered++);
const queries = names.map((n) => n === '!malformed' ? Buffer.from([1, 2, 3]) : n.endsWith('.in-addr.arpa') ? enc(n, 12) : enc(n, 1));
let i = 0;
const tick = () => {
  for (let k = 0; k < 10 && sent < Number(total); k++, sent++) s.send(queries[i++ % queries.length], 53, server);
  if (sent < Number(total)) setTimeout(tick, 2);
  else setTimeout(() => { console.log(JSON.stringify({ sent, answered })); s.close(); }, 1500);
};
tick();
`;

/**
 * Runs the plan on a bed that has three gateways and no networks yet; returns the report. `log` gets a
 * line per sample. The bed is left as it was found: networks and containers made here are removed.
 */
export async function runSoak(cb: ClusterBed, plan: SoakPlan, log: (line: string) => void): Promise<SoakReport> {
  const started = performance.now();
  const pick = rng(plan.seed);
  await settle(cb);
  const before = await sample(cb);
  // The namespaces the cycles' containers live in, one per host, kind and lane, made once (a container
  // joins one network at a time).
  const laneCount = { network: plan.lanes?.network ?? 1, connect: plan.lanes?.connect ?? 3 };
  const laneNs = (kind: 'nc' | 'cc', h: number, lane: number) => `${kind}${h}${lane === 0 ? '' : `l${lane}`}`;
  for (const h of SOAK_HOSTS) {
    for (let l = 0; l < laneCount.network; l++) await cb.container(laneNs('nc', h, l));
    for (let l = 0; l < laneCount.connect; l++) await cb.container(laneNs('cc', h, l));
  }
  const onNets: Array<Record<number, ContainerOnNetwork>> = [];
  for (const net of NETS)
    onNets.push((await encryptedNetworkWithContainers(cb, { ...net, hosts: SOAK_HOSTS })).containers);
  const containers = onNets[0]!;
  const samples: Sample[] = [];
  const cycles: Record<CycleKind, number> = {
    rotation: 0,
    network: 0,
    connect: 0,
    restart: 0,
    'etcd-member': 0,
    'etcd-outage': 0,
    dns: 0,
  };
  const done = () => Object.values(cycles).reduce((a, b) => a + b, 0);
  await settle(cb);
  samples.push({ cycles: 0, figures: await sample(cb) });
  const linksAtBaseline = await linkNames(cb);

  // Traffic the whole time: a ping ring on each network, and hash-checked TCP transfers one after
  // another, on each network by turns.
  const ring = onNets.flatMap((on) =>
    SOAK_HOSTS.map((h) => {
      const to = on[(h % 3) + 1]!;
      return pingLoop(cb, on[h]!.ns, to.ip, { interval: String(PING_INTERVAL_S), perRun: 250, waitS: 2 });
    }),
  );
  const transfers = { done: 0, hashMismatches: 0, inRestartWindows: 0, failures: [] as string[] };
  const restartWindows: Array<{ from: number; to: number }> = [];
  const restarts: SoakReport['restarts'] = [];
  const slowStops: string[] = [];
  let stopTransfers = false;
  const transferLoop = (async () => {
    for (let n = 0; !stopTransfers; n++) {
      // A pause between transfers: back to back they took over half the machine (two Node processes
      // each), CPU the cycles need; the ping ring keeps the network busy in between.
      if (n > 0) await new Promise((r) => setTimeout(r, TRANSFER_PAUSE_MS));
      const on = onNets[n % onNets.length]!;
      const from = on[(n % 3) + 1]!;
      const to = on[((n + 1) % 3) + 1]!;
      try {
        const r = await tcpTransfer(cb.bed, {
          fromNs: from.ns,
          toNs: to.ns,
          toIp: to.ip,
          bytes: 4 << 20,
          seed: `soak-${n}`,
          port: 5300 + (n % 100),
          timeoutMs: 120_000,
        });
        transfers.done++;
        if (r.received.sha256 !== r.expectedSha256 || r.sent.sha256 !== r.expectedSha256) transfers.hashMismatches++;
      } catch (err) {
        // A gateway's clean stop removes its containers' links (docs/plumbing.md "Plumbing"): a transfer
        // that fails while one restarts is in the window; any other failure counts.
        const at = Date.now();
        if (restartWindows.some((w) => at >= w.from - 1_000 && at <= w.to + 1_000)) {
          transfers.inRestartWindows++;
          continue;
        }
        const state = async (c: ContainerOnNetwork) =>
          (await cb.bed.exec(c.ns, ['ip', '-4', '-o', 'addr', 'show'], { allowFail: true })).stdout.replace(
            /\s+/g,
            ' ',
          );
        const why = (err as Error).message
          .split('\n')
          .filter((l) => /stderr|exited/.test(l))
          .join(' ');
        transfers.failures.push(
          `transfer ${n} at ${new Date().toISOString()} ${from.ns}→${to.ns}: ${why}; from: ${await state(from)}; to: ${await state(to)}`,
        );
      }
    }
  })();

  const dns = { sent: 0, answered: 0 };
  const lostAddresses: string[] = [];
  const gates = new HostGates();
  const work = plan.rotations + plan.networkCycles + plan.connectCycles;
  let progress = 0;
  let stop = false;
  /** Resolves once that share of the work cycles is done (or the work ended). */
  const until = async (share: number) => {
    while (!stop && progress < share * work && progress < work) await new Promise((r) => setTimeout(r, 100));
  };
  const numbers = { network: 0, connect: 0 };
  const lane = async (kind: 'rotation' | 'network' | 'connect', count: number, index: number) => {
    for (let i = 0; i < count && !stop; i++) {
      // A rotation needs every host; a network cycle its host and the next; a container cycle its host
      // and the one that resolves its alias. Picked among the hosts no restart holds.
      const choose = (): readonly number[] | undefined => {
        if (kind === 'rotation') return SOAK_HOSTS;
        const free = SOAK_HOSTS.filter((h) => gates.free(h) && gates.free((h % 3) + 1));
        if (free.length === 0) return undefined;
        const h = free[pick(free.length)]!;
        return [h, (h % 3) + 1];
      };
      await gates.shared(choose, async (hosts) => {
        const host = kind === 'rotation' ? SOAK_HOSTS[pick(3)]! : hosts[0]!;
        if (kind === 'rotation') await rotate(cb, host, NETS[index]!.name);
        else if (kind === 'network') await networkCycle(cb, host, numbers.network++, (h) => laneNs('nc', h, index));
        else await connectCycle(cb, host, numbers.connect++, laneNs('cc', host, index), containers);
      });
      cycles[kind]++;
      progress++;
    }
    log(
      `soak: ${kind} lane ${index} done (${count} cycles) after ${Math.round((performance.now() - started) / 1000)} s`,
    );
  };
  const split = (total: number, parts: number) =>
    Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0));

  // Restarts, member restarts and outages, shuffled, each at its share of the work.
  const events: Array<'restart' | 'etcd-member' | 'etcd-outage'> = [
    ...Array<'restart'>(plan.restarts).fill('restart'),
    ...Array<'etcd-member'>(plan.etcdMemberRestarts).fill('etcd-member'),
    ...Array<'etcd-outage'>(plan.etcdOutages).fill('etcd-outage'),
  ];
  for (let i = events.length - 1; i > 0; i--) {
    const j = pick(i + 1);
    [events[i], events[j]] = [events[j]!, events[i]!];
  }
  let restartTurn = 0;
  let memberTurn = 0;
  const disruptions = async () => {
    for (const [i, kind] of events.entries()) {
      await until((i + 0.5) / events.length);
      if (stop) return;
      const restarting = kind === 'restart' ? SOAK_HOSTS[restartTurn++ % 3]! : undefined;
      await gates.exclusive(kind === 'etcd-outage' ? SOAK_HOSTS : kind === 'restart' ? [restarting!] : [], async () => {
        if (kind === 'restart') {
          const h = restarting!;
          const signal = restartTurn % 2 ? 'SIGKILL' : 'SIGTERM';
          const old = cb.gateways.get(h);
          const window = { from: Date.now(), to: Infinity };
          restartWindows.push(window);
          const t0 = performance.now();
          await cb.stopGateway(h, signal);
          const stopMs = performance.now() - t0;
          await cb.startGateway(h);
          await settle(cb);
          window.to = Date.now();
          restarts.push({ host: h, signal, stopMs: Math.round(stopMs), upMs: Math.round(performance.now() - t0) });
          // A clean stop that took long (the gateway exits 2 s after stopping if its event loop has not drained): its last words.
          if (signal === 'SIGTERM' && stopMs > 1_500)
            slowStops.push((old?.stdout() ?? '').split('\n').filter(Boolean).slice(-15).join('\n'));
          log(`soak: restart ${cycles.restart + 1} (h${h}, ${signal}) up in ${Math.round(performance.now() - t0)} ms`);
        } else if (kind === 'etcd-member') {
          const m = memberTurn++ % 3;
          await cb.etcd.stopMember(m);
          await cb.etcd.startMember(m);
          await settle(cb);
        } else {
          for (let m = 0; m < 3; m++) await cb.etcd.stopMember(m);
          await new Promise((r) => setTimeout(r, 3_000));
          // Together: a member answers /health only once a quorum is back.
          await Promise.all([0, 1, 2].map((m) => cb.etcd.startMember(m)));
          await settle(cb);
          log(`soak: etcd outage ${cycles['etcd-outage'] + 1} over`);
        }
        cycles[kind]++;
      });
    }
  };

  // DNS batches and samples, each at its share of the work.
  const dnsBatches = Math.max(1, Math.ceil(plan.dnsQueries / 2000));
  const dnsLane = async () => {
    for (let b = 0; b < dnsBatches && !stop; b++) {
      await until((b + 0.5) / dnsBatches);
      await gates.shared(
        () => [SOAK_HOSTS[b % 3]!],
        async () => {
          const r = await dnsBatch(cb, containers[SOAK_HOSTS[b % 3]!]!, Math.min(2000, plan.dnsQueries - dns.sent));
          dns.sent += r.sent;
          dns.answered += r.answered;
        },
      );
      cycles.dns++;
    }
  };
  const sampler = async () => {
    for (let k = 1; k <= plan.samples && !stop; k++) {
      await until(k / (plan.samples + 1));
      await gates.shared(
        () => SOAK_HOSTS,
        async () => {
          const figures = await sample(cb);
          samples.push({ cycles: done(), figures });
          log(`soak: ${done()} cycles at ${new Date().toISOString()}, ${summary(figures)}`);
          for (const on of onNets)
            for (const h of SOAK_HOSTS) {
              const c = on[h]!;
              const addr = await cb.bed.exec(c.ns, ['ip', '-4', '-o', 'addr', 'show'], { allowFail: true });
              if (!addr.stdout.includes(` ${c.ip}/`) && lostAddresses.length < 10)
                lostAddresses.push(`${c.ns} at ${done()} cycles: ${addr.stdout.trim() || 'no address'}`);
            }
        },
      );
    }
  };

  try {
    const outcomes = await Promise.allSettled(
      [
        ...split(plan.rotations, NETS.length).map((n, i) => lane('rotation', n, i)),
        ...split(plan.networkCycles, laneCount.network).map((n, i) => lane('network', n, i)),
        ...split(plan.connectCycles, laneCount.connect).map((n, i) => lane('connect', n, i)),
        disruptions(),
        dnsLane(),
        sampler(),
      ].map((p) =>
        p.catch((err: unknown) => {
          // One lane failing ends the others at their next cycle; its error is the run's.
          stop = true;
          throw err;
        }),
      ),
    );
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed) throw failed.reason;
  } finally {
    stop = true;
    stopTransfers = true;
    await transferLoop;
  }
  const ping = await Promise.all(ring.map((r) => r.stop()));
  const drops = await Promise.all(SOAK_HOSTS.map((h) => gatewayDrops(cb, h)));
  await settle(cb);
  const end = await sample(cb);
  const linksAtEnd = await linkNames(cb);
  // etcd's revision grows with every write, by design; with nothing happening it must not.
  await new Promise((r) => setTimeout(r, IDLE_WINDOW_MS));
  const idleWrites = (await etcdGetPrefix(cb, '/veil/')).revision - end['etcd.revision']!;
  // Then the run's networks go too: what is left must be what was there before them.
  for (const net of NETS) {
    for (const h of SOAK_HOSTS)
      await cb.api(h, 'POST', `/networks/${net.name}/disconnect`, { Container: `${net.label}${h}` });
    const gone = await cb.api(1, 'DELETE', `/networks/${net.name}`);
    if (gone.status !== 204 && gone.status !== 200) throw new Error(`delete ${net.name}: ${JSON.stringify(gone.body)}`);
  }
  // The containers' namespaces go too, as a runtime removes a container's.
  for (const ns of cb.bed.namespaces())
    if (/^(sk|sl|nc|cc)\d/.test(ns.slice(cb.bed.prefix.length))) spawnSync('ip', ['netns', 'del', ns]);
  await settle(cb);
  const after = await sample(cb);
  const baseline = samples[0]!.figures;
  const during = samples.slice(1);
  const figures = Object.keys(baseline).map((name) => ({
    name,
    baseline: baseline[name]!,
    peak: Math.max(...samples.map((s) => s.figures[name] ?? 0), end[name]!),
    end: end[name]!,
    slopePer100: slope(during.map((s) => [s.cycles, s.figures[name]!])) * 100,
  }));
  return {
    cycles,
    figures,
    clean: { before, after },
    ping,
    transfers,
    dns,
    lostAddresses,
    links: { baseline: linksAtBaseline, end: linksAtEnd },
    restarts,
    slowStops,
    drops,
    idleWrites,
    seconds: (performance.now() - started) / 1000,
  };
}

function summary(f: Record<string, number>): string {
  return ['h1.rssMiB', 'h1.fds', 'h1.pairs', 'h1.retiredSas', 'etcd.keys', 'host.netns']
    .map((k) => `${k} ${Number(f[k]).toFixed(k.endsWith('MiB') ? 1 : 0)}`)
    .join(', ');
}

/** Least-squares slope of y over x. */
export function slope(points: Array<[number, number]>): number {
  if (points.length < 2) return 0;
  const n = points.length;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  return sxx === 0 ? 0 : points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0) / sxx;
}

/**
 * Every gateway answers, reaches etcd again (the keys view reads it: after an outage the client pauses
 * calls for a while), and seals toward every peer on the run's networks (those that exist).
 */
async function settle(cb: ClusterBed): Promise<void> {
  await waitFor(
    async () => {
      for (const h of SOAK_HOSTS)
        for (const { name } of NETS) {
          const r = await cb.api(h, 'GET', `/networks/${name}/status`).catch(() => null);
          if (!r) return false;
          if (r.status === 404) continue;
          if (r.body.Protected !== true) return false;
          if ((await cb.api(h, 'GET', `/networks/${name}/keys`).catch(() => null))?.status !== 200) return false;
        }
      return true;
    },
    60_000,
    'every gateway up and protected toward every peer',
  );
}

/** The oldest epoch the host seals with toward its peers on the network (GET status, from memory). */
async function sealingEpoch(cb: ClusterBed, host: number, net: string): Promise<number> {
  const r = await cb.api(host, 'GET', `/networks/${net}/status`);
  const peers = (r.body.Peers ?? []) as Array<{ Outbound: { Epoch: number } | null }>;
  return peers.length === 0 ? 0 : Math.min(...peers.map((p) => p.Outbound?.Epoch ?? 0));
}

/** A forced rotation of `net` through `host`, done when every host seals with a newer epoch toward every peer. */
async function rotate(cb: ClusterBed, host: number, net: string): Promise<void> {
  const before = Math.max(...(await Promise.all(SOAK_HOSTS.map((h) => sealingEpoch(cb, h, net)))));
  const r = await cb.api(host, 'POST', `/networks/${net}/rotate`);
  if (r.status !== 202) throw new Error(`rotate: ${JSON.stringify(r.body)}`);
  await waitFor(
    async () => {
      for (const h of SOAK_HOSTS) if ((await sealingEpoch(cb, h, net)) <= before) return false;
      return true;
    },
    60_000,
    `an epoch after ${before} sealing on every host`,
  );
}

/** A network (encrypted or plain by turn) with a container on two hosts that reach each other, then gone. */
async function networkCycle(cb: ClusterBed, host: number, n: number, label: (host: number) => string): Promise<void> {
  const name = `churn${n}`;
  const encrypted = n % 2 === 0;
  const c = await cb.api(host, 'POST', '/networks', {
    Name: name,
    ...(encrypted ? { Options: { encrypted: '' } } : {}),
    IPAM: { Config: [{ Subnet: `10.91.${n % 250}.0/24` }] },
  });
  if (c.status !== 201) throw new Error(`create ${name}: ${JSON.stringify(c.body)}`);
  const [a, b] = [host, (host % 3) + 1];
  const ips: string[] = [];
  for (const h of [a, b]) {
    const netns = `/run/netns/${cb.bed.prefix}${label(h)}`;
    const r = await cb.api(h, 'POST', `/networks/${name}/connect`, {
      Container: `nc${h}-${n}`,
      Sandbox: { Netns: netns },
    });
    if (r.status !== 200) throw new Error(`connect ${name} on h${h}: ${JSON.stringify(r.body)}`);
    ips.push((r.body.IPv4Address as string).split('/')[0]!);
  }
  await waitFor(
    async () => (await inNetns(`${cb.bed.prefix}${label(a)}`, ['ping', '-c', '1', '-W', '1', ips[1]!])).status === 0,
    30_000,
    `${name}: h${a} reaches h${b}`,
  );
  for (const h of [a, b]) await cb.api(h, 'POST', `/networks/${name}/disconnect`, { Container: `nc${h}-${n}` });
  const d = await cb.api(host, 'DELETE', `/networks/${name}`);
  if (d.status !== 204 && d.status !== 200) throw new Error(`delete ${name}: ${JSON.stringify(d.body)}`);
}

/** A container with aliases joins the run's network, is found by name and alias, and leaves. */
async function connectCycle(
  cb: ClusterBed,
  host: number,
  n: number,
  label: string,
  containers: Record<number, ContainerOnNetwork>,
): Promise<void> {
  const name = `cc${n}`;
  const r = await cb.api(host, 'POST', `/networks/${NET}/connect`, {
    Container: name,
    Sandbox: { Netns: `/run/netns/${cb.bed.prefix}${label}` },
    EndpointConfig: { Aliases: [`alias${n}`] },
  });
  if (r.status !== 200) throw new Error(`connect ${name}: ${JSON.stringify(r.body)}`);
  const other = containers[(host % 3) + 1]!;
  await waitFor(
    async () =>
      (
        await inNetns(other.ns, ['dig', '+short', '+tries=1', '+time=1', '@169.254.53.53', `alias${n}`])
      ).stdout.trim() === (r.body.IPv4Address as string).split('/')[0],
    30_000,
    `alias${n} resolves from h${(host % 3) + 1}`,
  );
  const d = await cb.api(host, 'POST', `/networks/${NET}/disconnect`, { Container: name });
  if (d.status !== 200 && d.status !== 204) throw new Error(`disconnect ${name}: ${JSON.stringify(d.body)}`);
}

async function dnsBatch(
  cb: ClusterBed,
  from: ContainerOnNetwork,
  total: number,
): Promise<{ sent: number; answered: number }> {
  const reverse = from.ip.split('.').reverse().join('.') + '.in-addr.arpa';
  const r = await cb.bed.exec(
    from.ns,
    [
      process.execPath,
      '-e',
      DNS_SENDER,
      '169.254.53.53',
      String(total),
      'sk1',
      'sk2',
      'sk3',
      reverse,
      'example.test',
      '!malformed',
    ],
    { timeoutMs: 120_000 },
  );
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { sent: number; answered: number };
}
