/*
 * One gateway per data directory, and what the last one left (docs/etcd.md "Leases").
 *
 * The gateway holds flock(2) on <data-dir>/gateway.lock for its whole life; the kernel releases it
 * when the process ends, however it ends. A second gateway on the same directory is refused.
 *
 * Before registering, it writes <data-dir>/incarnation.json: its incarnation, the kernel's boot id
 * and the lock file's device and inode. At the next start, with the lock taken, that file names a
 * predecessor that is certainly gone when the boot id and the lock file are the same: the same
 * kernel, the same directory (not a copy of it, nor a cloned disk booted elsewhere), and its lock
 * free. Only then may the new process take over a host record that still carries that incarnation,
 * instead of waiting for its lease to expire.
 */
import { closeSync, fstatSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VeilError } from '../errors.js';
import { requireNativeAddon } from './native.js';

export const LOCK_FILE = 'gateway.lock';
export const INCARNATION_FILE = 'incarnation.json';
const BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id';

/** What a gateway leaves in its data directory for the next one. */
export interface IncarnationMark {
  incarnation: string;
  bootId: string;
  lock: { dev: number; ino: number };
}

/** flock(LOCK_EX | LOCK_NB) on a descriptor: true if taken, false if held elsewhere (the addon's flockExclusive). */
export type FlockExclusive = (fd: number) => boolean;

/** The addon's flockExclusive, or undefined when the addon does not load. */
export function nativeFlock(): FlockExclusive | undefined {
  try {
    return (requireNativeAddon() as { flockExclusive: FlockExclusive }).flockExclusive;
  } catch {
    return undefined;
  }
}

export interface DataDirClaim {
  /** The incarnation of this directory's previous gateway, known to be gone; undefined when that cannot be proven. */
  readonly predecessor: string | undefined;
  /** Why there is no predecessor (for the log), when there is none. */
  readonly why: string | undefined;
  /** Writes this process's incarnation for the next start to find (before it registers). */
  record(incarnation: string): void;
  /** Releases the lock (a clean stop; an exit releases it anyway). */
  release(): void;
}

/**
 * The predecessor a mark names, if it is certainly gone: only with the lock held (checked by the
 * caller) and the same boot and the same lock file. Anything else (no mark, another boot, a copied
 * directory, a mark that does not parse) proves nothing.
 */
export function provenPredecessor(
  markText: string | undefined,
  bootId: string,
  lock: { dev: number; ino: number },
): { incarnation: string } | { why: string } {
  if (markText === undefined) return { why: 'no earlier gateway recorded in this data directory' };
  let mark: Partial<IncarnationMark>;
  try {
    mark = JSON.parse(markText) as Partial<IncarnationMark>;
  } catch {
    return { why: `${INCARNATION_FILE} does not parse` };
  }
  if (typeof mark.incarnation !== 'string' || !/^[0-9a-f]{16}$/.test(mark.incarnation))
    return { why: `${INCARNATION_FILE} names no incarnation` };
  if (mark.bootId !== bootId) return { why: 'the earlier gateway ran under another boot (or on another machine)' };
  if (mark.lock?.dev !== lock.dev || mark.lock?.ino !== lock.ino)
    return { why: 'the data directory is a copy: its lock file is not the one the earlier gateway held' };
  return { incarnation: mark.incarnation };
}

/**
 * Takes the data directory's lock. Refused (VEIL_ERR_DATA_DIR_IN_USE) while another process holds
 * it. Without flock (no native addon) there is no lock and no predecessor: a restart after a crash
 * then waits for the old lease, as a clone would.
 */
export function claimDataDir(
  dataDir: string,
  flock: FlockExclusive | undefined,
  bootId: () => string = () => readFileSync(BOOT_ID_PATH, 'utf8').trim(),
): DataDirClaim {
  const markPath = join(dataDir, INCARNATION_FILE);
  if (!flock)
    return {
      predecessor: undefined,
      why: 'no data directory lock without the native addon',
      record() {},
      release() {},
    };
  const fd = openSync(join(dataDir, LOCK_FILE), 'a', 0o600);
  let taken: boolean;
  try {
    taken = flock(fd);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  if (!taken) {
    closeSync(fd);
    throw new VeilError('VEIL_ERR_DATA_DIR_IN_USE', `${dataDir} (another veil gateway runs with it)`);
  }
  const { dev, ino } = fstatSync(fd);
  const boot = bootId();
  let markText: string | undefined;
  try {
    markText = readFileSync(markPath, 'utf8');
  } catch {
    markText = undefined;
  }
  const proven = provenPredecessor(markText, boot, { dev, ino });
  let open = true;
  return {
    predecessor: 'incarnation' in proven ? proven.incarnation : undefined,
    why: 'why' in proven ? proven.why : undefined,
    record(incarnation) {
      const mark: IncarnationMark = { incarnation, bootId: boot, lock: { dev, ino } };
      const tmp = `${markPath}.tmp`;
      writeFileSync(tmp, JSON.stringify(mark) + '\n', { mode: 0o600 });
      renameSync(tmp, markPath);
    },
    release() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}
