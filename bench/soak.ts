// bench/soak: the full soak (test/system/netns/soak.ts): three gateways on a three-member etcd in the
// namespace bed, traffic the whole time, and the life cycle of months interleaved: 1,000 forced
// rotations, 500 network cycles, 5,000 container cycles with aliases, 100 gateway restarts, 20 etcd
// member restarts, 2 full etcd outages, 100,000 DNS queries. Prints each figure's baseline, peak, end
// and slope per 100 cycles, so a leak shows as a number. Root (network namespaces).
//   VEIL_SOAK_SCALE (1): every count times this (0.1 for a tenth of the run)
import { createClusterBed } from '../test/system/netns/cluster-bed.js';
import { runSoak } from '../test/system/netns/soak.js';

const SCALE = Number(process.env.VEIL_SOAK_SCALE ?? 1);
const n = (full: number) => Math.max(1, Math.round(full * SCALE));

const cb = await createClusterBed({ hosts: 3, etcdMembers: 3, gatewayArgs: ['--key-grace', '1s'] });
try {
  const report = await runSoak(
    cb,
    {
      rotations: n(1000),
      networkCycles: n(500),
      connectCycles: n(5000),
      restarts: n(100),
      etcdMemberRestarts: n(20),
      etcdOutages: n(2),
      dnsQueries: n(100_000),
      samples: 40,
      seed: Date.now() % 2 ** 31,
    },
    (line) => console.log(line),
  );
  console.log(`\nbench/soak: ${JSON.stringify(report.cycles)} in ${(report.seconds / 60).toFixed(1)} min`);
  console.log(
    `${'figure'.padEnd(16)} ${'baseline'.padStart(9)} ${'peak'.padStart(9)} ${'end'.padStart(9)}  slope/100 cycles`,
  );
  for (const f of report.figures)
    console.log(
      `${f.name.padEnd(16)} ${f.baseline.toFixed(1).padStart(9)} ${f.peak.toFixed(1).padStart(9)} ${f.end.toFixed(1).padStart(9)}  ${f.slopePer100.toFixed(3)}`,
    );
  // The revision counts etcd's writes: it moves with every cycle by design (its slope is writes per 100 cycles).
  const changed = Object.keys(report.clean.before).filter(
    (k) => k !== 'etcd.revision' && report.clean.before[k] !== report.clean.after[k],
  );
  console.log(
    `without the run's networks, changed from before them: ${changed.length ? changed.join(', ') : 'nothing'}`,
  );
  console.log(
    `traffic: ping ${report.ping.map((p) => `${p.received}/${p.transmitted}`).join(', ')}; transfers ${report.transfers.done}, hash mismatches ${report.transfers.hashMismatches}, failures ${report.transfers.failures.length}; DNS ${report.dns.answered}/${report.dns.sent} answered`,
  );
  console.log(`drops: ${JSON.stringify(report.drops)}`);
  console.log(`etcd writes in 10 s of an idle cluster after the run: ${report.idleWrites}`);
} finally {
  await cb.destroy();
}
process.exit(0);
