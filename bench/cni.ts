// bench/cni: what a veil-cni ADD and DEL cost, against the standard `bridge` plugin with `host-local`
// IPAM (containernetworking-plugins) in the same run, on one host of the namespace bed. Each call
// runs as a runtime runs it: a new process with CNI_* set and the configuration on stdin, from the
// host's network namespace (nsenter), into a container namespace; ADD then DEL, interleaved.
//   VEIL_BENCH_RUNS (100 of each)
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClusterBed } from '../test/system/netns/cluster-bed.js';
import { PLUGIN, runPlugin, type CniCall } from '../test/system/cni/cni-run.js';

const RUNS = Number(process.env.VEIL_BENCH_RUNS ?? 100);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function timed(call: CniCall, argv: string[]): Promise<number> {
  const started = process.hrtime.bigint();
  const answer = await runPlugin(call, argv);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (answer.code !== 0) throw new Error(`${call.command} failed: ${answer.stdout}${answer.stderr}`);
  return ms;
}

async function main(): Promise<void> {
  const cb = await createClusterBed({ hosts: 1 });
  const dataDir = mkdtempSync(join(tmpdir(), 'veil-bench-cni-'));
  try {
    const made = await cb.api(1, 'POST', '/networks', {
      Name: 'pods',
      Options: { encrypted: '' },
      IPAM: { Config: [{ Subnet: '10.70.0.0/24' }] },
    });
    if (made.status !== 201) throw new Error(JSON.stringify(made.body));
    const host = ['nsenter', `--net=/run/netns/${cb.bed.hosts[0]!.netns}`];
    const veil = { argv: [...host, process.execPath, PLUGIN], ns: await cb.container('benchveil') };
    const bridge = { argv: [...host, '/usr/lib/cni/bridge'], ns: await cb.container('benchbridge') };
    const confs = {
      veil: { cniVersion: '1.0.0', name: 'pods', type: 'veil-cni', api: `unix:${cb.socket(1)}` },
      bridge: {
        cniVersion: '1.0.0',
        name: 'ref',
        type: 'bridge',
        bridge: 'cnibench0',
        ipam: { type: 'host-local', subnet: '10.71.0.0/24', dataDir },
      },
    };
    const times = {
      veil: { add: [] as number[], del: [] as number[] },
      bridge: { add: [] as number[], del: [] as number[] },
    };
    for (let i = 0; i < RUNS + 1; i++) {
      for (const kind of ['veil', 'bridge'] as const) {
        const k = kind === 'veil' ? veil : bridge;
        const call = {
          containerId: randomBytes(32).toString('hex'),
          netns: k.ns.netns,
          ifName: 'eth0',
          conf: confs[kind],
        };
        const add = await timed({ ...call, command: 'ADD' }, k.argv);
        const del = await timed({ ...call, command: 'DEL' }, k.argv);
        if (i === 0) continue; // the first of each warms caches
        times[kind].add.push(add);
        times[kind].del.push(del);
      }
    }
    const rows: string[][] = [];
    for (const op of ['add', 'del'] as const) {
      const v = [...times.veil[op]].sort((a, b) => a - b);
      const b = [...times.bridge[op]].sort((a, b) => a - b);
      for (const p of [50, 99])
        rows.push([
          `${op.toUpperCase()} p${p}`,
          percentile(v, p).toFixed(1),
          percentile(b, p).toFixed(1),
          (percentile(v, p) / percentile(b, p)).toFixed(2),
        ]);
    }
    console.log(`bench/cni: ${RUNS} ADD and DEL each, interleaved (ms)`);
    console.log(['', 'veil-cni', 'bridge+host-local', 'veil/bridge'].map((c) => c.padEnd(18)).join(''));
    for (const r of rows) console.log(r.map((c) => c.padEnd(18)).join(''));
  } finally {
    await cb.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
