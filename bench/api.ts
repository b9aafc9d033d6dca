// bench/api: the REST API at a fixed request rate, with autocannon over the gateway's unix socket, beside
// a bare fastify route answering a constant (in a process of its own) in the same run. One gateway on a
// real etcd with 21 networks; reads (networks, one network, its status) and connect + disconnect of a
// container of this host (real plumbing). Prints req/s, p50 and p99, and each p99 over the reference's.
//   VEIL_BENCH_RATE (1000 req/s), VEIL_BENCH_SECONDS (10), VEIL_BENCH_CONNECTIONS (20)
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { createClusterBed } from '../test/system/netns/cluster-bed.js';

const RATE = Number(process.env.VEIL_BENCH_RATE ?? 1000);
const SECONDS = Number(process.env.VEIL_BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.VEIL_BENCH_CONNECTIONS ?? 20);
const NETWORKS = 21;

/** A bare fastify route on a unix socket: what the API's own overhead is measured against. */
const REFERENCE = `
const Fastify = require(process.argv[1]);
const app = Fastify({ logger: false });
app.get('/', async () => ({ ok: true }));
app.listen({ path: process.argv[2] }).then(() => console.log('ready'));
`;

interface Row {
  name: string;
  socket: string;
  requests: autocannon.Request[];
}

interface Result {
  name: string;
  rps: number;
  p50: number;
  p99: number;
  ok: number;
  failed: number;
  /** Status codes and how often. */
  codes: string;
}

async function load(row: Row, seconds = SECONDS): Promise<Result> {
  const r = await autocannon({
    url: 'http://localhost',
    socketPath: row.socket,
    connections: CONNECTIONS,
    overallRate: RATE,
    duration: seconds,
    requests: row.requests,
  });
  return {
    name: row.name,
    rps: r.requests.average,
    p50: r.latency.p50,
    p99: r.latency.p99,
    ok: r['2xx'],
    failed: r.non2xx + r.errors + r.timeouts,
    codes: Object.entries(r.statusCodeStats ?? {})
      .map(([code, v]) => `${code}×${(v as { count: number }).count}`)
      .join(' '),
  };
}

async function main(): Promise<void> {
  const cb = await createClusterBed({ hosts: 1 });
  const reference = spawn(
    process.execPath,
    ['-e', REFERENCE, createRequire(import.meta.url).resolve('fastify'), join(cb.dir, 'ref.sock')],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  try {
    await new Promise<void>((resolve, reject) => {
      reference.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      reference.once('exit', () => reject(new Error('the reference server exited')));
    });
    const ids: string[] = [];
    for (let i = 0; i < NETWORKS; i++) {
      const r = await cb.api(1, 'POST', '/networks', {
        Name: `bench-${i}`,
        ...(i % 2 === 0 ? { Options: { encrypted: '' } } : {}),
        IPAM: { Config: [{ Subnet: `10.${100 + i}.0.0/24` }] },
      });
      if (r.status !== 201) throw new Error(`create network: ${r.status} ${JSON.stringify(r.body)}`);
      ids.push((r.body as { Id: string }).Id);
    }
    const target = ids[0]!;
    // One container namespace per connection: a runtime never attaches two containers into one at once.
    const sandboxes: string[] = [];
    for (let i = 0; i < CONNECTIONS; i++) sandboxes.push((await cb.container(`bench${i}`)).netns);
    const socket = cb.socket(1);
    const json = { 'content-type': 'application/json' };
    let n = 0;
    const rows: Row[] = [
      {
        name: 'bare fastify route (reference)',
        socket: join(cb.dir, 'ref.sock'),
        requests: [{ method: 'GET', path: '/' }],
      },
      { name: 'GET /networks', socket, requests: [{ method: 'GET', path: '/networks' }] },
      { name: 'GET /networks/{id}', socket, requests: [{ method: 'GET', path: `/networks/${target}` }] },
      { name: 'GET /networks/{id}/status', socket, requests: [{ method: 'GET', path: `/networks/${target}/status` }] },
      {
        name: 'POST connect + disconnect',
        socket,
        requests: [
          {
            method: 'POST',
            path: `/networks/${target}/connect`,
            headers: json,
            setupRequest: (req, context) => {
              // A free namespace for this cycle, back in the pool once its disconnect is answered.
              const c = context as { name?: string; netns?: string };
              c.netns = sandboxes.pop();
              c.name = `b${++n}`;
              return { ...req, body: JSON.stringify({ Container: c.name, Sandbox: { Netns: c.netns } }) };
            },
          },
          {
            method: 'POST',
            path: `/networks/${target}/disconnect`,
            headers: json,
            setupRequest: (req, context) => ({
              ...req,
              body: JSON.stringify({ Container: (context as { name?: string }).name }),
            }),
            onResponse: (_status, _body, context) => {
              const netns = (context as { netns?: string }).netns;
              if (netns) sandboxes.push(netns);
            },
          },
        ],
      },
    ];
    console.log(
      `bench/api: autocannon, ${CONNECTIONS} connections, asked for ${RATE} req/s for ${SECONDS} s each; ` +
        `one gateway, ${NETWORKS} networks; node ${process.version}`,
    );
    const results: Result[] = [];
    await new Promise((r) => setTimeout(r, 3_000)); // the gateway done with plumbing the networks
    for (const row of rows) {
      if (row.name.startsWith('GET') || row.name.startsWith('bare')) await load(row, 2); // warm-up, not counted
      const r = await load(row);
      results.push(r);
      console.log(`  ${r.name.padEnd(34)} done: ${r.ok} answered, ${r.failed} failed (${r.codes})`);
    }
    const ref = results[0]!;
    console.log(
      `${'row'.padEnd(34)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'failed'.padStart(7)}  p99 / reference`,
    );
    for (const r of results)
      console.log(
        `${r.name.padEnd(34)} ${r.rps.toFixed(0).padStart(8)} ${r.p50.toFixed(1).padStart(8)} ${r.p99.toFixed(1).padStart(8)} ${String(r.failed).padStart(7)}  ${(r.p99 / Math.max(ref.p99, 0.001)).toFixed(1)}`,
      );
  } finally {
    reference.kill();
    await cb.destroy();
  }
}

await main();
