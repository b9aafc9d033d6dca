// Host commands: the posix_spawn runner (native/spawn.c) and the fork fallback (child_process) give the
// same outcomes for the same commands (docs/performance.md "the control plane's host commands"); in the
// system tier, as these start processes.
import { describe, expect, it } from 'vitest';
import {
  commandRunnerChoice,
  execRunner,
  forkRunner,
  spawnRunnerOf,
  type CommandRunner,
  type SpawnRun,
} from '../../../src/host/exec.js';
import { requireNativeAddon } from '../../../src/host/native.js';

const addon = requireNativeAddon() as { spawnRun: SpawnRun };
const spawnRunner = spawnRunnerOf(addon.spawnRun);
const runners: Array<[string, CommandRunner]> = [
  ['posix_spawn', spawnRunner],
  ['fork', forkRunner],
];

it('the gateway runs host commands with posix_spawn when the addon is built', () => {
  expect(commandRunnerChoice()).toEqual({ kind: 'posix_spawn' });
});

describe.each(runners)('%s', (_name, run) => {
  it('returns stdout and stderr of a command that succeeds', async () => {
    expect(await run('sh', ['-c', 'printf out; printf err >&2'])).toEqual({ stdout: 'out', stderr: 'err' });
  });

  it('feeds stdin, as ip -batch - reads it', async () => {
    const input = 'x'.repeat(300_000) + '\n';
    const r = await run('sh', ['-c', 'wc -c'], input);
    expect(r.stdout.trim()).toBe(String(input.length));
  });

  it('a command that leaves stdin unread is judged by its exit status', async () => {
    expect((await run('true', [], 'y'.repeat(1 << 20))).stdout).toBe('');
  });

  it('rejects a non-zero exit with the argv, the status and stderr', async () => {
    await expect(run('sh', ['-c', 'echo no such device >&2; exit 2'])).rejects.toMatchObject({
      code: 'VEIL_ERR_PLUMBING_COMMAND',
      exitCode: 2,
      stderr: 'no such device\n',
      argv: ['sh', '-c', 'echo no such device >&2; exit 2'],
    });
  });

  it('rejects a command that is not there with its errno', async () => {
    await expect(run('veil-no-such-command', ['x'])).rejects.toMatchObject({
      code: 'VEIL_ERR_PLUMBING_COMMAND',
      exitCode: 'ENOENT',
    });
  });

  it('names the signal that killed a command', async () => {
    await expect(run('sh', ['-c', 'kill -KILL $$'])).rejects.toMatchObject({ exitCode: 'SIGKILL' });
  });

  it('gives the command default signal dispositions (Node ignores SIGPIPE) and no blocked signal', async () => {
    // SigIgn may hold only glibc's own real-time signals (32 and 33), never SIGPIPE (bit 12).
    const { stdout } = await run('sh', ['-c', 'grep -E "^Sig(Ign|Blk)" /proc/self/status']);
    const mask = (name: string) => BigInt(`0x${new RegExp(`${name}:\\s*([0-9a-f]+)`).exec(stdout)![1]}`);
    expect(mask('SigIgn') & (1n << 12n)).toBe(0n);
    expect(mask('SigIgn') & ((1n << 31n) - 1n)).toBe(0n);
    expect(mask('SigBlk')).toBe(0n);
  });

  it('reads output larger than a pipe holds', async () => {
    const { stdout } = await run('head', ['-c', String(3 << 20), '/dev/zero']);
    expect(stdout.length).toBe(3 << 20);
  });

  it('runs commands side by side', async () => {
    const started = Date.now();
    const out = await Promise.all([1, 2, 3].map((i) => run('sh', ['-c', `sleep 0.3; echo ${i}`])));
    expect(out.map((r) => r.stdout.trim())).toEqual(['1', '2', '3']);
    expect(Date.now() - started).toBeLessThan(900);
  });
});

it('the posix_spawn child holds no descriptor but stdin, stdout and stderr', async () => {
  const { stdout } = await spawnRunner('sh', ['-c', 'ls /proc/$$/fd']);
  expect(stdout.trim().split('\n').sort()).toEqual(['0', '1', '2']);
});

it('posix_spawn kills a command past its time, TERM then KILL, and says so', async () => {
  const spawnRun = addon.spawnRun;
  const term = await spawnRun('sleep', ['5'], new Uint8Array(), 200, 1 << 20);
  expect(term).toMatchObject({ status: null, signal: 15, timedOut: true });
  const started = Date.now();
  // An ignored SIGTERM survives exec: only the SIGKILL that follows ends it.
  const kill = await spawnRun('sh', ['-c', 'trap "" TERM; exec sleep 5'], new Uint8Array(), 200, 1 << 20);
  expect(kill).toMatchObject({ status: null, signal: 9, timedOut: true });
  expect(Date.now() - started).toBeLessThan(4_000);
});

it('posix_spawn stops a command past the output bound', async () => {
  const r = await addon.spawnRun('head', ['-c', String(3 << 20), '/dev/zero'], new Uint8Array(), 5_000, 1 << 20);
  expect(r.overflowed).toBe(true);
  expect(r.stdout.length).toBeLessThanOrEqual(1 << 20);
});

it('refuses argv words with NUL bytes and bad bounds before starting anything', () => {
  expect(() => addon.spawnRun('sh', ['a\0b'], new Uint8Array(), 1000, 10)).toThrow(/NUL/);
  expect(() => addon.spawnRun('', [], new Uint8Array(), 1000, 10)).toThrow(/file/);
  expect(() => addon.spawnRun('sh', [], new Uint8Array(), 0, 10)).toThrow(/timeoutMs/);
});

it('execRunner is the chosen runner', async () => {
  expect((await execRunner('echo', ['chosen'])).stdout).toBe('chosen\n');
});
