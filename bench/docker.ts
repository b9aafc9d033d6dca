// bench/docker: what the Docker plugin costs, against references measured in the same run on the
// Docker bed (test/system/docker/docker-bed.ts: a real dockerd beside each veil gateway).
//   1. `docker run --rm … true` on an encrypted veil network against `--network none`, interleaved:
//      the time veil adds per container, p50 and p99.
//   2. iperf3 between Docker containers on two hosts against the same pair of hosts with containers
//      attached by the veil CLI: the plugin's path against veil's own.
//   VEIL_BENCH_RUNS (40 containers of each kind), VEIL_BENCH_ROUNDS (3), VEIL_BENCH_SECONDS (10)
import { createDockerBed, IMAGE, type DockerBed } from '../test/system/docker/docker-bed.js';

const RUNS = Number(process.env.VEIL_BENCH_RUNS ?? 40);
const ROUNDS = Number(process.env.VEIL_BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.VEIL_BENCH_SECONDS ?? 10);
const SUBNET = '10.70.0.0/24';

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function timed(db: DockerBed, network: string): Promise<number> {
  const started = process.hrtime.bigint();
  await db.docker(1, ['run', '--rm', '--network', network, IMAGE, 'true']);
  return Number(process.hrtime.bigint() - started) / 1e6;
}

function gbps(iperfJson: string): number {
  const r = JSON.parse(iperfJson) as { end: { sum_received: { bits_per_second: number } } };
  return r.end.sum_received.bits_per_second / 1e9;
}

async function main(): Promise<void> {
  const db = await createDockerBed({ hosts: 2, programs: ['/usr/bin/iperf3'] });
  try {
    for (const i of [1, 2]) {
      const made = await db.createNetwork(i, 'secure', SUBNET);
      if (made.code !== 0) throw new Error(`docker network create on host ${i}: ${made.stderr}`);
    }

    // 1. Added time per container, interleaved so both kinds see the same machine.
    const none: number[] = [];
    const veil: number[] = [];
    await timed(db, 'secure'); // the first join binds the network
    for (let i = 0; i < RUNS; i++) {
      none.push(await timed(db, 'none'));
      veil.push(await timed(db, 'secure'));
    }
    none.sort((a, b) => a - b);
    veil.sort((a, b) => a - b);

    // 2. Throughput: Docker containers, and veil-CLI containers, host 1 ← host 2.
    await db.docker(1, ['run', '-d', '--name', 'srv', '--network', 'secure', IMAGE, 'iperf3', '-s']);
    const srvIp = (
      await db.docker(1, ['inspect', '-f', '{{(index .NetworkSettings.Networks "secure").IPAddress}}', 'srv'])
    ).stdout.trim();
    const a = await db.cb.container('cli1');
    const b = await db.cb.container('cli2');
    const cliA = await db.cb.api(1, 'POST', '/networks/secure/connect', {
      Container: 'cli1',
      Sandbox: { Netns: a.netns },
    });
    await db.cb.api(2, 'POST', '/networks/secure/connect', { Container: 'cli2', Sandbox: { Netns: b.netns } });
    const cliIp = String(cliA.body.IPv4Address).split('/')[0]!;
    const server = db.cb.bed.spawn(a.ns, ['iperf3', '-s'], { lifetime: 'bed' });
    await new Promise((r) => setTimeout(r, 500));
    const docker: number[] = [];
    const cli: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const d = await db.docker(
        2,
        ['run', '--rm', '--network', 'secure', IMAGE, 'iperf3', '-c', srvIp, '-t', String(SECONDS), '-J'],
        { timeoutMs: (SECONDS + 30) * 1000 },
      );
      docker.push(gbps(d.stdout));
      const c = await db.cb.bed.exec(b.ns, ['iperf3', '-c', cliIp, '-t', String(SECONDS), '-J'], {
        timeoutMs: (SECONDS + 30) * 1000,
      });
      cli.push(gbps(c.stdout));
    }
    await server.stop();

    const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
    const ms = (x: number) => `${x.toFixed(0)} ms`;
    console.log(`bench/docker: ${RUNS} containers of each kind, ${ROUNDS} iperf3 rounds of ${SECONDS} s`);
    console.log('| row | p50 | p99 |');
    console.log('|---|---|---|');
    console.log(`| docker run --rm --network none true | ${ms(percentile(none, 50))} | ${ms(percentile(none, 99))} |`);
    console.log(
      `| docker run --rm --network secure true (veil, encrypted) | ${ms(percentile(veil, 50))} | ${ms(percentile(veil, 99))} |`,
    );
    console.log(
      `| added by veil | ${ms(percentile(veil, 50) - percentile(none, 50))} | ${ms(percentile(veil, 99) - percentile(none, 99))} |`,
    );
    console.log('');
    console.log('| row | Gbit/s, mean (min–max) |');
    console.log('|---|---|');
    const row = (name: string, xs: number[]) =>
      console.log(`| ${name} | ${mean(xs).toFixed(2)} (${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}) |`);
    row('Docker containers, encrypted veil network', docker);
    row('veil-CLI containers, same network and hosts', cli);
    console.log(`| Docker ÷ veil CLI | ${(mean(docker) / mean(cli)).toFixed(2)} |`);
  } finally {
    await db.destroy();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
