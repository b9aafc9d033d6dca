// How a command reaches a namespace: `ip -n` for names under /run/netns (paths there included),
// nsenter for any other path or a pid, and nsenter (never `ip netns exec`) for other commands.
import { describe, expect, it } from 'vitest';
import { execIn, ipIn, runNetnsName } from '../../src/host/netns.js';

function recorder() {
  const calls: string[] = [];
  return {
    calls,
    runner: async (file: string, args: readonly string[]) => (
      calls.push([file, ...args].join(' ')),
      { stdout: '', stderr: '' }
    ),
  };
}

describe('runNetnsName', () => {
  it('gives the name of a path directly under /run/netns only', () => {
    expect(runNetnsName('/run/netns/cni-1234')).toBe('cni-1234');
    for (const p of [
      '/var/run/docker/netns/abc',
      '/run/netns/a/b',
      '/run/netns/',
      '/run/netns/..',
      '/proc/1/ns/net',
      'run/netns/x',
    ])
      expect(runNetnsName(p), p).toBeUndefined();
  });
});

describe('ipIn and execIn', () => {
  it('ip: -n for a name or a /run/netns path, nsenter otherwise', async () => {
    const r = recorder();
    await ipIn(r.runner, { name: 'a' }, ['link']);
    await ipIn(r.runner, { path: '/run/netns/b' }, ['link']);
    await ipIn(r.runner, { path: '/var/run/docker/netns/c' }, ['link']);
    await ipIn(r.runner, { pid: 42 }, ['link']);
    expect(r.calls).toEqual([
      'ip -n a link',
      'ip -n b link',
      'nsenter --net=/var/run/docker/netns/c -- ip link',
      'nsenter --net=/proc/42/ns/net -- ip link',
    ]);
  });

  it('other commands: nsenter into the named namespace, or run here', async () => {
    const r = recorder();
    await execIn(r.runner, 'vt', ['nft', '-j', 'list', 'ruleset']);
    await execIn(r.runner, undefined, ['sysctl', '-q', '-w', 'x=1']);
    expect(r.calls).toEqual(['nsenter --net=/run/netns/vt -- nft -j list ruleset', 'sysctl -q -w x=1']);
  });
});
