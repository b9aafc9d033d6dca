// bench/rotation: how long a forced key rotation takes, from the request to every gateway sealing
// with the new epoch (docs/keys.md "Rotation": the next epoch waits installed on every member, the
// standby; the leader activates it → every member switches outbound).
//   1. 100 simulated hosts in this process against one etcd on loopback (test/support/etcd.ts):
//      each an EpochInstaller + EpochFollower with its own EtcdStore client and registered host
//      lease, a no-op sink that records when it was called; one of them runs the KeyScheduleLeader.
//   2. 3 real `veil gateway` processes in the namespace bed (test/system/netns/cluster-bed.ts), timed
//      through their APIs: POST /networks/{id}/rotate, then GET /networks/{id}/keys on every host
//      until the new epoch is OutboundHere everywhere.
// Each rotation starts once the standby is installed on every host: what is measured is the
// rotation, not the wait for the previous one's publish and retirement.
// Reference, same run, same etcd as (1): one put reaching 100 watchers (one per simulated host's
// client), 3 rounds before each rotation of (1). Ratios are rotation median / reference median.
// Where the time goes: the leader's read and its activation write reaching every host; wrapping
// the secret once per member, unwrapping and installing come after it, for the next standby.
//   VEIL_BENCH_ROTATIONS (10), VEIL_BENCH_CLIENTS (100), VEIL_BENCH_ONLY (sim | bed)
// Needs root (namespaces) for part 2; part 1 needs only /usr/bin/etcd.
import type { KeyScheduleLeader } from '../src/keyrotation/leader.js';
import { requestRotation, storeRotationRequests } from '../src/keyrotation/requests.js';
import { keys } from '../src/store/layout.js';
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
import { createClusterBed, keysOf, outboundEpoch } from '../test/system/netns/cluster-bed.js';

const ROTATIONS = Number(process.env.VEIL_BENCH_ROTATIONS ?? 10);
const CLIENTS = Number(process.env.VEIL_BENCH_CLIENTS ?? 100);
const ONLY = process.env.VEIL_BENCH_ONLY;

const fmt = (ms: number) => `${ms.toFixed(1)} ms`;

interface SimResult {
  clients: number;
  rotation: number[];
  phases: { firstActivate: number[]; nextStandbyInstalled: number[] };
  reference: number[];
}

async function simulated(): Promise<SimResult> {
  const etcd = await startEtcd({ members: 1 });
  const hosts: SimHost[] = [];
  let leader: KeyScheduleLeader | undefined;
  const config = { intervalMs: 3_600_000, ackTimeoutMs: 30_000, graceMs: 200, retiredLingerMs: 200 };
  try {
    for (let i = 0; i < CLIENTS; i++) hosts.push(await simHost(etcd.endpoints, i, config, 30));
    leader = simLeader(hosts[0]!, config);
    const ref = await fanout(hosts.map((h) => h.store.client));
    const reference: number[] = [];
    let lostRounds = 0;
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
    const phases: SimResult['phases'] = { firstActivate: [], nextStandbyInstalled: [] };
    const requests = storeRotationRequests(h0.store, keys.rotatePrefix());
    const standby = () => standbyEverywhere(h0.store, network.id, hosts);
    for (let k = 0; k < ROTATIONS; k++) {
      await until(async () => (await standby()) !== null, 30_000, 'a standby installed on every host', 20);
      for (let i = 0; i < 3; i++) {
        const ms = await ref.measure();
        if (ms === null) lostRounds++;
        else reference.push(ms);
        await sleep(20);
      }
      const t0 = performance.now();
      const req = await requestRotation({ store: h0.store, requests }, network.id, 'bench');
      const target = req.afterEpoch + 1;
      await until(() => outboundEverywhere(target), 60_000, `epoch ${target} outbound on every simulated host`, 2);
      const t1 = Math.max(...hosts.map((h) => h.activatedAt.get(target)!));
      rotation.push(t1 - t0);
      phases.firstActivate.push(Math.min(...hosts.map((h) => h.activatedAt.get(target)!)) - t0);
      await until(async () => (await standby()) === target + 1, 30_000, `standby ${target + 1} on every host`, 20);
      phases.nextStandbyInstalled.push(Math.max(...hosts.map((h) => h.installedAt.get(target + 1)!)) - t0);
    }
    await ref.close();
    if (lostRounds > 0) console.log(`reference rounds some watcher never saw (left out): ${lostRounds}`);
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
        async () =>
          (
            await Promise.all(
              hostsList.map(async (h) =>
                (await keysOf(cb, h, 'bench-rot')).Epochs.some((e) => e.State === 'published' && e.InstalledHere),
              ),
            )
          ).every(Boolean),
        30_000,
        'a standby installed on every gateway',
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
  console.log(row('  phase: request → first outbound (activation seen)', sim.phases.firstActivate, ref));
  console.log(row('  then: request → next standby installed on all', sim.phases.nextStandbyInstalled, ref));
}
if (bed) console.log(row('3 veil gateways (bed, API-timed): request → all outbound', bed.rotation, ref));
process.exit(0);
