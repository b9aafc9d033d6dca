// bench/rotation: how long a forced key rotation takes, from the request to every gateway sealing
// with the new epoch (docs/keys.md "Rotation": publish → every member installs inbound and acks →
// the leader activates → every member switches outbound).
//   1. 100 simulated hosts in this process against one etcd on loopback (test/support/etcd.ts):
//      each an EpochInstaller + EpochFollower with its own EtcdStore client and registered host
//      lease, a no-op sink that records when it was called; one of them runs the KeyScheduleLeader.
//   2. 3 real `veil gateway` processes in the namespace bed (test/system/netns/cluster-bed.ts), timed
//      through their APIs: POST /networks/{id}/rotate, then GET /networks/{id}/keys on every host
//      until the new epoch is OutboundHere everywhere.
// Each rotation starts when the schedule can publish at once (at most 2 epoch records, none
// pending): what is measured is the rotation, not the wait for the previous epoch to retire.
// Reference, same run, same etcd as (1): one put reaching 100 watchers (one per simulated host's
// client), 3 rounds before each rotation of (1). Ratios are rotation median / reference median.
// Where the time goes: the leader wraps the secret once per member (X25519 on node:crypto, ~0.2 ms
// each: docs/performance.md), and the 100 simulated hosts unwrap and install on this one core,
// where real hosts do it in parallel.
//   VEIL_BENCH_ROTATIONS (10), VEIL_BENCH_CLIENTS (100), VEIL_BENCH_ONLY (sim | bed)
// Needs root (namespaces) for part 2; part 1 needs only /usr/bin/etcd.
import type { Etcd3, Watcher } from 'etcd3';
import { bytesToHex } from '../src/crypto/bytes.js';
import { generateX25519KeyPair } from '../src/crypto/x25519.js';
import { EpochFollower } from '../src/keyrotation/follower.js';
import { EpochInstaller, type EpochSink } from '../src/keyrotation/installer.js';
import { KeyScheduleLeader } from '../src/keyrotation/leader.js';
import { requestRotation, storeRotationRequests } from '../src/keyrotation/requests.js';
import { EtcdStore } from '../src/store/etcd.js';
import { keys } from '../src/store/layout.js';
import type { HostLease } from '../src/store/types.js';
import { startEtcd } from '../test/system/support/etcd.js';
import { createClusterBed, keysOf, outboundEpoch } from '../test/system/netns/cluster-bed.js';

const ROTATIONS = Number(process.env.VEIL_BENCH_ROTATIONS ?? 10);
const CLIENTS = Number(process.env.VEIL_BENCH_CLIENTS ?? 100);
const ONLY = process.env.VEIL_BENCH_ONLY;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => quantile(xs, 0.5);
function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
}
const fmt = (ms: number) => `${ms.toFixed(1)} ms`;

async function until<T>(
  get: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs: number,
  what: string,
  everyMs = 5,
): Promise<T> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (v) return v;
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(everyMs);
  }
}

interface SimHost {
  id: string;
  store: EtcdStore;
  lease: HostLease;
  installer: EpochInstaller;
  follower: EpochFollower;
  /** epoch → when the sink was told to install (inbound) / activate (outbound). */
  installedAt: Map<number, number>;
  activatedAt: Map<number, number>;
}

interface SimResult {
  clients: number;
  rotation: number[];
  phases: { firstInstall: number[]; allInstalled: number[]; firstActivate: number[] };
  reference: number[];
}

/**
 * The reference: one put reaching one watcher per client. measure() times one round, from just
 * before the put to the last watcher's event; rounds are interleaved with the rotations, so both
 * see the same load (100 followers' watches and lease keepalives, the leader).
 */
async function fanout(clients: Etcd3[]): Promise<{ measure(): Promise<number>; close(): Promise<void> }> {
  const key = '/bench/fanout';
  const seen = new Map<number, number>();
  let expected = 0;
  let done: (() => void) | null = null;
  const watchers: Watcher[] = await Promise.all(clients.map((c) => c.watch().key(key).create()));
  for (const w of watchers) {
    w.on('put', (kv) => {
      const round = Number(kv.value.toString());
      const n = (seen.get(round) ?? 0) + 1;
      seen.set(round, n);
      if (round === expected && n === watchers.length) done?.();
    });
  }
  return {
    async measure() {
      expected++;
      const all = new Promise<void>((r) => (done = r));
      const t0 = performance.now();
      await clients[0]!.put(key).value(String(expected));
      await all;
      return performance.now() - t0;
    },
    close: async () => void (await Promise.all(watchers.map((w) => w.cancel()))),
  };
}

async function simulated(): Promise<SimResult> {
  const etcd = await startEtcd({ members: 1 });
  const hosts: SimHost[] = [];
  let leader: KeyScheduleLeader | undefined;
  const config = { intervalMs: 3_600_000, ackTimeoutMs: 30_000, graceMs: 200, retiredLingerMs: 200 };
  try {
    for (let i = 0; i < CLIENTS; i++) {
      const id = `sim${String(i + 1).padStart(3, '0')}`;
      const store = new EtcdStore({ endpoints: etcd.endpoints });
      const kp = generateX25519KeyPair();
      const incarnation = bytesToHex(kp.publicKey.subarray(0, 8));
      const lease = await store.registerHost(
        {
          id,
          address: `10.200.${(i >> 8) & 255}.${i & 255}`,
          os: 'linux',
          arch: process.arch,
          version: 'bench',
          publicKey: bytesToHex(kp.publicKey),
          incarnation,
        },
        30,
      );
      const installedAt = new Map<number, number>();
      const activatedAt = new Map<number, number>();
      const sink: EpochSink = {
        installEpoch: async (_n, e) => void installedAt.set(e, performance.now()),
        activateEpoch: async (_n, e) => void activatedAt.set(e, performance.now()),
        retireEpoch: async () => undefined,
      };
      const self = { hostId: id, privateKey: kp.privateKey };
      const installer = new EpochInstaller({
        self,
        sink,
        ack: (networkId, epoch) =>
          store.ack(lease, { networkId, epoch, hostId: id, incarnation, installedAt: Date.now() }),
        config,
      });
      const follower = new EpochFollower({ store, installer });
      hosts.push({ id, store, lease, installer, follower, installedAt, activatedAt });
      if (i === 0)
        leader = new KeyScheduleLeader({
          store,
          requests: storeRotationRequests(store, keys.rotatePrefix()),
          self,
          config,
        });
    }
    const ref = await fanout(hosts.map((h) => h.store.client));
    const reference: number[] = [];
    const h0 = hosts[0]!;
    const network = await h0.store.createNetwork({
      name: 'bench-rot',
      encrypted: true,
      ipam: { subnet: '10.201.0.0/24' },
    });
    await Promise.all(hosts.map((h) => h.follower.start()));
    leader!.start();
    const outboundEverywhere = (epoch: number) => hosts.every((h) => h.activatedAt.has(epoch));
    await until(() => outboundEverywhere(1), 60_000, 'epoch 1 outbound on every simulated host', 20);
    const rotation: number[] = [];
    const phases: SimResult['phases'] = { firstInstall: [], allInstalled: [], firstActivate: [] };
    const requests = storeRotationRequests(h0.store, keys.rotatePrefix());
    for (let k = 0; k < ROTATIONS; k++) {
      await until(
        async () => {
          const { items } = await h0.store.getEpochs(network.id);
          return items.length <= 2 && items.every((r) => r.state !== 'published');
        },
        30_000,
        'room for a new epoch',
        20,
      );
      for (let i = 0; i < 3; i++) {
        reference.push(await ref.measure());
        await sleep(20);
      }
      const t0 = performance.now();
      const req = await requestRotation({ store: h0.store, requests }, network.id, 'bench');
      const target = req.afterEpoch + 1;
      await until(() => outboundEverywhere(target), 60_000, `epoch ${target} outbound on every simulated host`, 2);
      const t1 = Math.max(...hosts.map((h) => h.activatedAt.get(target)!));
      rotation.push(t1 - t0);
      phases.firstInstall.push(Math.min(...hosts.map((h) => h.installedAt.get(target)!)) - t0);
      phases.allInstalled.push(Math.max(...hosts.map((h) => h.installedAt.get(target)!)) - t0);
      phases.firstActivate.push(Math.min(...hosts.map((h) => h.activatedAt.get(target)!)) - t0);
    }
    await ref.close();
    return { clients: CLIENTS, rotation, phases, reference };
  } finally {
    await leader?.stop().catch(() => undefined);
    await Promise.all(hosts.map((h) => h.follower.stop().catch(() => undefined)));
    for (const h of hosts) h.installer.close();
    await Promise.all(hosts.map((h) => h.lease.revoke().catch(() => undefined)));
    await Promise.all(hosts.map((h) => h.store.close().catch(() => undefined)));
    await etcd.stop();
  }
}

async function realGateways(): Promise<{ rotation: number[] }> {
  const cb = await createClusterBed({ hosts: 3 });
  try {
    const r = await cb.api(1, 'POST', '/networks', {
      Name: 'bench-rot',
      Options: { encrypted: '' },
      IPAM: { Config: [{ Subnet: '10.68.0.0/24' }] },
    });
    if (r.status !== 201) throw new Error(`create: ${JSON.stringify(r.body)}`);
    const hostsList = [1, 2, 3];
    const everywhere = async (epoch: number) =>
      (
        await Promise.all(hostsList.map(async (h) => (outboundEpoch(await keysOf(cb, h, 'bench-rot')) ?? 0) >= epoch))
      ).every(Boolean);
    await until(() => everywhere(1), 60_000, 'epoch 1 outbound on every gateway', 50);
    const rotation: number[] = [];
    for (let k = 0; k < ROTATIONS; k++) {
      await until(
        async () => {
          const v = await keysOf(cb, 1, 'bench-rot');
          return v.Epochs.length <= 2 && v.Epochs.every((e) => e.State !== 'published');
        },
        30_000,
        'room for a new epoch',
        20,
      );
      const t0 = performance.now();
      const a = await cb.api(hostsList[k % 3]!, 'POST', '/networks/bench-rot/rotate');
      if (a.status !== 202) throw new Error(`rotate: ${a.status} ${JSON.stringify(a.body)}`);
      const target = (a.body.AfterEpoch as number) + 1;
      await until(() => everywhere(target), 60_000, `epoch ${target} outbound on every gateway`, 5);
      rotation.push(performance.now() - t0);
    }
    return { rotation };
  } finally {
    await cb.destroy();
  }
}

const row = (name: string, xs: number[], ref: number) =>
  `${name.padEnd(52)} n=${String(xs.length).padStart(3)}  median ${fmt(median(xs)).padStart(10)}  p95 ${fmt(quantile(xs, 0.95)).padStart(10)}  ${Number.isFinite(ref) ? `${(median(xs) / ref).toFixed(1)}× ref` : ''}`;

let sim: SimResult | undefined;
let bed: { rotation: number[] } | undefined;
if (ONLY !== 'bed') sim = await simulated();
if (ONLY !== 'sim') bed = await realGateways();
const ref = sim ? median(sim.reference) : NaN;
console.log(`\nforced rotation, request → every member sealing with the new epoch (${ROTATIONS} rotations each)`);
if (sim) {
  console.log(row(`reference: one etcd put reaching ${sim.clients} watchers`, sim.reference, ref));
  console.log(row(`${sim.clients} simulated hosts: request → all outbound`, sim.rotation, ref));
  console.log(row('  phase: request → first install (publish seen)', sim.phases.firstInstall, ref));
  console.log(row('  phase: request → all installed', sim.phases.allInstalled, ref));
  console.log(row('  phase: request → first outbound (activation seen)', sim.phases.firstActivate, ref));
}
if (bed) console.log(row('3 veil gateways (bed, API-timed): request → all outbound', bed.rotation, ref));
process.exit(0);
