// `npm run demo`, the README's first command, kept working: the whole script runs (on the build
// `npm test` has just made) and must succeed, show ESP only on the encrypted network's wire, keep
// pings through the forced rotation, and leave no namespace, process or file behind.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { expect, it } from 'vitest';

function netns(): string[] {
  try {
    return readdirSync('/run/netns');
  } catch {
    return [];
  }
}

it('scripts/demo.sh runs end to end and cleans up after itself', async () => {
  expect(existsSync(resolve('dist/src/cli/veil.js')), 'npm run build first (npm test does)').toBe(true);
  const { code, out } = await new Promise<{ code: number | null; out: string }>((res) => {
    const child = spawn('bash', ['scripts/demo.sh', '--no-build'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (c) => res({ code: c, out }));
  });
  expect(code, out).toBe(0);
  const prefix = /namespaces (vdm[a-z0-9]{4}-)\*/.exec(out)?.[1];
  expect(prefix, out).toBeDefined();
  expect(out).toMatch(/h1: gateway ready \(native data path/);
  expect(out).toMatch(/s1 -> s3 \(10\.10\.1\.\d+\): 5 received, 0% packet loss/);
  expect(out).toMatch(/secure: \d+ packets on the wire, all ESP in UDP 4500/);
  expect(out).toMatch(/plain: standard VXLAN \(UDP 4789\), \d+ ICMP packets readable/);
  expect(out).toMatch(/epoch 2 active and sealing on h1, h2 and h3/);
  expect(out).toMatch(/SPIs on the wire h1 -> h2, in order: 0x[0-9a-f]+ 0x[0-9a-f]+/);
  expect(out).toMatch(/left behind: 0 namespaces with prefix .* 0 processes/);
  expect(out).toMatch(/^demo: done$/m);
  expect(netns().filter((n) => n.startsWith(prefix!))).toEqual([]);
  expect(existsSync(`/tmp/veil-demo-${prefix}`)).toBe(false);
  expect(existsSync(`/run/veil-demo/${prefix}`)).toBe(false);
}, 240_000);
