// The data directory's lock with the real flock (native/lock.c): held by one open file description at
// a time, across processes, and free again the moment its holder dies, SIGKILL included, which is what
// lets the next gateway replace its predecessor's record at once (docs/etcd.md "Leases").
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { claimDataDir, LOCK_FILE, nativeFlock } from '../../../src/host/data-dir.js';
import { tempDirs } from '../../support/temp-dirs.js';

const dir = tempDirs('veil-datadir-');

it('the addon provides flock', () => {
  expect(nativeFlock()).toBeTypeOf('function');
});

it('a second claim is refused while the first holds the lock, and succeeds, naming it, once released', () => {
  const d = dir();
  const first = claimDataDir(d, nativeFlock());
  first.record('0123456789abcdef');
  expect(() => claimDataDir(d, nativeFlock())).toThrow(expect.objectContaining({ code: 'VEIL_ERR_DATA_DIR_IN_USE' }));
  first.release();
  const second = claimDataDir(d, nativeFlock());
  expect(second.predecessor).toBe('0123456789abcdef');
  second.release();
});

it('a process killed with SIGKILL leaves the lock free; while it lives, the lock is its', async () => {
  const d = dir();
  // A process holding the lock as a gateway does: an open descriptor, flock(1) on it, then it just lives.
  const holder = spawn('bash', ['-c', 'exec 9>>"$0"; flock --exclusive 9; exec sleep 60', join(d, LOCK_FILE)], {
    stdio: 'ignore',
  });
  try {
    // It has the lock once a claim of ours is refused.
    for (let i = 0; ; i++) {
      try {
        claimDataDir(d, nativeFlock()).release();
      } catch (err) {
        expect(err).toMatchObject({ code: 'VEIL_ERR_DATA_DIR_IN_USE' });
        break;
      }
      if (i > 100) throw new Error('flock(1) never took the lock');
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('exit', r));
  }
  const claim = claimDataDir(d, nativeFlock());
  claim.release();
});

it('flockExclusive throws with the errno name on a descriptor that is not open', () => {
  expect(() => nativeFlock()!(987654)).toThrow(expect.objectContaining({ code: 'EBADF' }));
});
