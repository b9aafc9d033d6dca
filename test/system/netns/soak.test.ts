// The soak, short (docs/testing.md "Soak"; bench/soak.ts runs the full plan): three gateways on a
// three-member etcd, a ping ring and hash-checked TCP transfers on each of two encrypted networks the whole time,
// while rotations, network and container cycles, gateway restarts (SIGTERM and SIGKILL), etcd member
// restarts, a full etcd outage and DNS queries run interleaved. What the gateways, etcd and the host
// hold must come back to where it was.
import { writeFileSync } from 'node:fs';
import { beforeAll, expect, it } from 'vitest';
import { createClusterBed, type ClusterBed } from './cluster-bed.js';
import { cleanUpClusterBed } from './cluster-hooks.js';
import { PING_INTERVAL_S, runSoak, type SoakReport } from './soak.js';

let cb: ClusterBed;

beforeAll(async () => {
  cb = await createClusterBed({ hosts: 3, etcdMembers: 3, gatewayArgs: ['--key-grace', '1s'] });
}, 120_000);

cleanUpClusterBed(() => cb);

/** Figures that must be back exactly: entries that exist only while what they stand for exists. */
const EXACT = /\.(pairs|outboundSas|links|fdb|nftRules|leases|campaigns)$|^host\.|^gateways\.watches$/;

it('nothing the churn touches is left behind, and the traffic never breaks', async () => {
  const report: SoakReport = await runSoak(
    cb,
    {
      rotations: 12,
      networkCycles: 6,
      connectCycles: 16,
      restarts: 3,
      etcdMemberRestarts: 2,
      etcdOutages: 1,
      dnsQueries: 6_000,
      samples: 8,
      seed: 20261206,
    },
    (line) => console.log(line),
  );
  for (const f of report.figures)
    console.log(
      `${f.name.padEnd(16)} baseline ${fmt(f.baseline)} peak ${fmt(f.peak)} end ${fmt(f.end)} slope/100 cycles ${f.slopePer100.toFixed(2)}`,
    );
  const { transfers } = report;
  if (transfers.failures.length > 0 && process.env.VEIL_SOAK_LOGS)
    for (const h of [1, 2, 3])
      writeFileSync(`${process.env.VEIL_SOAK_LOGS}/h${h}.log`, cb.gateways.get(h)?.stdout() ?? '');
  console.log(
    JSON.stringify({
      cycles: report.cycles,
      ping: report.ping,
      transfers,
      dns: report.dns,
      lostAddresses: report.lostAddresses,
      linksChanged: Object.fromEntries(
        Object.keys(report.links.baseline).map((h) => [
          h,
          {
            gone: report.links.baseline[h]!.filter((l) => !report.links.end[h]!.includes(l)),
            new: report.links.end[h]!.filter((l) => !report.links.baseline[h]!.includes(l)),
          },
        ]),
      ),
      restarts: report.restarts,
      slowStops: report.slowStops,
      drops: report.drops,
      seconds: Math.round(report.seconds),
    }),
  );

  const at = (name: string) => report.figures.find((f) => f.name === name)!;
  for (const f of report.figures.filter((x) => EXACT.test(x.name))) expect(f.end, f.name).toBe(f.baseline);
  // Per host, for each of the run's two encrypted networks:
  for (const h of [1, 2, 3]) {
    // in service, one epoch's SAs per peer at the baseline, at most three epochs' while a rotation is under way;
    expect(at(`h${h}.inboundSas`).end).toBeLessThanOrEqual(2 * 3 * 2);
    // retired SAs are remembered for the two epochs behind the newest, per peer and direction (native/satable.c
    // "Epoch high-water marks"), twice over for a peer restarted inside them: at most 2 × 2 × 2 × 2.
    expect(at(`h${h}.retiredSas`).end).toBeLessThanOrEqual(2 * 16);
  }
  // etcd, per network: at most two epoch records more than at the baseline (one published or retired
  // and lingering), a copy per member (3) of each, and the network's rotation request: 2 × (1 + 3) + 1.
  expect(at('etcd.keys').end).toBeLessThanOrEqual(at('etcd.keys').baseline + 2 * 9);
  // The revision grows with the writes the cycles make; an idle cluster writes nothing.
  expect(report.idleWrites).toBe(0);
  // Without the run's networks, every count is what it was before them.
  for (const name of Object.keys(report.clean.before).filter((n) => EXACT.test(n) || /Sas$|^etcd\.keys$/.test(n)))
    expect(report.clean.after[name], name).toBe(report.clean.before[name]);

  // Traffic: every transfer arrived whole; echoes lost only around the gateway restarts and the etcd outage.
  expect(report.lostAddresses).toEqual([]);
  expect(report.transfers).toMatchObject({ hashMismatches: 0, failures: [] });
  expect(report.transfers.done).toBeGreaterThan(0);
  expect(report.ping).toHaveLength(6);
  for (const p of report.ping) {
    expect(p.transmitted).toBeGreaterThan(0);
    // A restarted gateway is gone for about 3 s; each ping of a ring crosses two of the three hosts.
    expect(p.transmitted - p.received).toBeLessThanOrEqual((report.cycles.restart * 2 * 3) / PING_INTERVAL_S);
  }
  for (const d of report.drops)
    for (const [reason, n] of Object.entries(d)) if (reason.startsWith('replay')) expect(n, reason).toBe(0);
  expect(report.dns.sent).toBe(6_000);
  expect(report.dns.answered).toBeGreaterThan(0);
}, 1_200_000);

function fmt(n: number): string {
  return (Number.isInteger(n) ? String(n) : n.toFixed(1)).padStart(7);
}
