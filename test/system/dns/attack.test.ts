// A container attacking the embedded resolver, measured from outside: the resolver runs as a process
// of its own (test/dns/attack-resolver.ts) in a namespace of the bed; the attacker (test/dns/attack-
// client.ts, source 127.0.0.2) pipelines 48 MiB of queries for a name upstream never answers over one
// connection and keeps 64 slow-loris connections open; meanwhile another container (dig from
// 127.0.0.3) asks local and forwarded names. The resolver's RSS is read from /proc all along.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../support/wait.js';
import { createBed, type Bed, type BedProcess } from '../netns/bed.js';
import { CLI } from '../netns/overlay-bed.js';

const DIST_TEST = join(CLI, '..', '..', '..', 'test', 'dns');
const RESOLVER = '127.0.0.1';
const ATTACKER = '127.0.0.2';
const OTHER = '127.0.0.3';
const ATTACK_MIB = 48;
/**
 * What the attack may add to the resolver's RSS. What the limits let it hold is under 2 MiB
 * (docs/dns.md "Limits"); the rest is the V8 heap's own slack under the connection churn.
 */
const RSS_GROWTH_BOUND_MIB = 32;

let bed: Bed;
let ns: string;

beforeAll(async () => {
  bed = await createBed({ hosts: 1 });
  ns = await bed.namespace('dnsatk');
}, 60_000);

afterAll(async () => {
  await bed?.destroy();
});

const rssKiB = (pid: number): number =>
  Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN);

async function dig(args: string[]): Promise<string[]> {
  const r = await bed.exec(ns, ['dig', '+tries=1', '+time=2', '+short', '-b', OTHER, `@${RESOLVER}`, ...args], {
    allowFail: true,
  });
  return r.code === 0 ? r.stdout.trim().split('\n').filter(Boolean) : [`no answer (exit ${r.code})`];
}

const lastLoad = (
  p: BedProcess,
): { tcpReadingPaused: number; tcpPending: number; tcpBufferedBytes: number } | undefined => {
  const line = p
    .stdout()
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('load '))
    .at(-1);
  return line ? JSON.parse(line.slice('load '.length)) : undefined;
};

describe('a container attacking the resolver', () => {
  it(`${ATTACK_MIB} MiB pipelined for a name upstream never answers, and 64 slow-loris connections: the resolver's RSS grows by less than ${RSS_GROWTH_BOUND_MIB} MiB and another container keeps being answered`, async () => {
    const resolver = bed.spawn(ns, [process.execPath, join(DIST_TEST, 'attack-resolver.js'), RESOLVER, '53']);
    await resolver.waitFor(/^listening/, 10_000);
    // Warm up (code paths compiled, buffers allocated), then the baseline.
    for (let i = 0; i < 5; i++) {
      expect(await dig(['web'])).toEqual(['127.0.0.2']);
      expect(await dig(['+tcp', 'web'])).toEqual(['127.0.0.2']);
    }
    const baseline = rssKiB(resolver.pid);
    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, rssKiB(resolver.pid))), 100);
    try {
      const attacker = bed.spawn(ns, [
        process.execPath,
        join(DIST_TEST, 'attack-client.js'),
        RESOLVER,
        '53',
        ATTACKER,
        String(ATTACK_MIB),
        '64',
      ]);
      await waitFor(
        () => /^done$/m.test(attacker.stdout()) || (lastLoad(resolver)?.tcpReadingPaused ?? 0) > 0,
        60_000,
        'the attack sent in full, or the resolver no longer reading it',
      );
      const failures: string[] = [];
      // Another container: a local name over UDP and TCP, and a forwarded name, each within dig's 2 s.
      for (let round = 0; round < 10; round++) {
        const udp = await dig(['web']);
        if (udp.join() !== '127.0.0.2') failures.push(`round ${round}: UDP web → ${udp.join()}`);
        const tcp = await dig(['+tcp', 'web']);
        if (tcp.join() !== '127.0.0.2') failures.push(`round ${round}: TCP web → ${tcp.join()}`);
        const forwarded = await dig([`r${round}.upstream.test`]);
        if (forwarded.join() !== '192.0.2.7') failures.push(`round ${round}: forwarded → ${forwarded.join()}`);
        // Rounds over more than the query bound: slow-loris connections are closed and opened again meanwhile.
        await new Promise((r) => setTimeout(r, 250));
      }
      clearInterval(sampler);
      peak = Math.max(peak, rssKiB(resolver.pid));
      const sent = Number(/sent (\d+)\n(?![\s\S]*sent)/.exec(attacker.stdout())?.[1] ?? 0);
      const load = lastLoad(resolver);
      console.log(
        `[dns attack] attacker sent ${(sent / 2 ** 20).toFixed(1)} MiB; resolver RSS ${(baseline / 1024).toFixed(0)} MiB → ` +
          `peak ${(peak / 1024).toFixed(0)} MiB (+${((peak - baseline) / 1024).toFixed(1)} MiB); last gauges ${JSON.stringify(load)}`,
      );
      expect.soft(failures, 'the other container answered every time').toEqual([]);
      expect.soft((peak - baseline) / 1024, 'RSS growth, MiB').toBeLessThan(RSS_GROWTH_BOUND_MIB);
      await attacker.stop();
    } finally {
      clearInterval(sampler);
    }
  }, 180_000);
});
