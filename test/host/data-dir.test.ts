// What a data directory proves about its previous gateway (src/host/data-dir.ts, docs/etcd.md
// "Leases"): with the lock taken, only a mark from the same boot and the same lock file names a
// predecessor that is certainly gone. The lock itself is the seam here (a fake flock); the real one is
// in test/system/host/data-dir.test.ts.
import { cpSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { claimDataDir, INCARNATION_FILE, LOCK_FILE, provenPredecessor } from '../../src/host/data-dir.js';
import { tempDirs } from '../support/temp-dirs.js';

const INC = '0123456789abcdef';
const BOOT = 'b0b0b0b0-1111-2222-3333-444455556666';
const LOCK = { dev: 64769, ino: 1234 };
const mark = (over: Record<string, unknown> = {}) =>
  JSON.stringify({ incarnation: INC, bootId: BOOT, lock: LOCK, ...over });

describe('provenPredecessor', () => {
  it('names the incarnation of a mark from this boot and this lock file', () => {
    expect(provenPredecessor(mark(), BOOT, LOCK)).toEqual({ incarnation: INC });
  });

  it.each([
    ['no mark', undefined, /no earlier gateway/],
    ['a mark that does not parse', '{"incarnation":', /does not parse/],
    ['a mark without an incarnation', mark({ incarnation: undefined }), /names no incarnation/],
    ['an incarnation that is not 16 hex digits', mark({ incarnation: 'zz' }), /names no incarnation/],
    ['another boot (a reboot, or a cloned disk booted elsewhere)', mark({ bootId: 'other' }), /another boot/],
    ['another lock file inode (a copied directory)', mark({ lock: { dev: LOCK.dev, ino: 99 } }), /is a copy/],
    ['another lock file device', mark({ lock: { dev: 1, ino: LOCK.ino } }), /is a copy/],
    ['no lock in the mark', mark({ lock: undefined }), /is a copy/],
  ])('proves nothing from %s', (_what, text, why) => {
    const r = provenPredecessor(text, BOOT, LOCK);
    expect(r).not.toHaveProperty('incarnation');
    expect((r as { why: string }).why).toMatch(why);
  });
});

describe('claimDataDir', () => {
  const dir = tempDirs('veil-datadir-');

  it('refuses a directory whose lock another process holds, and writes nothing', () => {
    const d = dir();
    expect(() =>
      claimDataDir(
        d,
        () => false,
        () => BOOT,
      ),
    ).toThrow(expect.objectContaining({ code: 'VEIL_ERR_DATA_DIR_IN_USE' }));
    expect(() => readFileSync(join(d, INCARNATION_FILE))).toThrow();
  });

  it('finds the incarnation the last process recorded, under the same boot; not after a reboot', () => {
    const d = dir();
    const first = claimDataDir(
      d,
      () => true,
      () => BOOT,
    );
    expect(first.predecessor).toBeUndefined();
    first.record(INC);
    first.release();
    const mode = statSync(join(d, INCARNATION_FILE)).mode & 0o777;
    expect(mode).toBe(0o600);
    const second = claimDataDir(
      d,
      () => true,
      () => BOOT,
    );
    expect(second.predecessor).toBe(INC);
    second.release();
    const rebooted = claimDataDir(
      d,
      () => true,
      () => 'another-boot',
    );
    expect(rebooted.predecessor).toBeUndefined();
    expect(rebooted.why).toMatch(/another boot/);
    rebooted.release();
  });

  it('a copy of the directory proves nothing: its lock file is another file', () => {
    const d = dir();
    const first = claimDataDir(
      d,
      () => true,
      () => BOOT,
    );
    first.record(INC);
    first.release();
    const copy = join(dir(), 'copy');
    cpSync(d, copy, { recursive: true, preserveTimestamps: true });
    expect(readFileSync(join(copy, INCARNATION_FILE), 'utf8')).toBe(readFileSync(join(d, INCARNATION_FILE), 'utf8'));
    const cloned = claimDataDir(
      copy,
      () => true,
      () => BOOT,
    );
    expect(cloned.predecessor).toBeUndefined();
    expect(cloned.why).toMatch(/is a copy/);
    cloned.release();
  });

  it('without flock (no native addon) there is no lock and no predecessor, whatever the mark says', () => {
    const d = dir();
    writeFileSync(join(d, INCARNATION_FILE), mark());
    const claim = claimDataDir(d, undefined, () => BOOT);
    expect(claim.predecessor).toBeUndefined();
    expect(claim.why).toMatch(/native addon/);
    claim.record('fedcba9876543210');
    expect(readFileSync(join(d, INCARNATION_FILE), 'utf8')).toBe(mark()); // records nothing it cannot prove later
    expect(() => statSync(join(d, LOCK_FILE))).toThrow();
  });
});
