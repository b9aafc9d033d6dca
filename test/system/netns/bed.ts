// Network-namespace test bed: N "hosts" on a private underlay, each with its vtep netns (IproutePlumbing),
// plus "container" namespaces, commands and long-running processes inside any of them.
//
//   <p>u   hub netns: bridge ul0; port h<i> per host                    (underlay, 198.18.0.0/24, MTU 1500)
//   <p>h<i> host i: eth0 198.18.0.<i>/24 ↔ h<i> in the hub; to-vtep 169.254.<i>.1/30
//   <p>t<i> vtep of host i: to-host 169.254.<i>.2/30, br<VNI>, vx<VNI> (made by the bed, or only reserved
//           for the host's gateway to make)
//   <p><label> containers and any other namespace the test asks for
// <p> is the run's prefix: "v" + 5 random base36 chars + "-" (7 chars), unique per bed.
//
// Safety: before a namespace is created its name is written to /run/veil-test/<p>.json together with
// the creating pid and that process's start time. destroy() (also run on exit, SIGINT, SIGTERM, SIGHUP)
// removes exactly those namespaces; sweepStale() removes those of markers whose process is gone.
// A namespace that no marker names is never touched.

import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { IproutePlumbing } from '../../../src/vxlan/plumbing.js';
import type { PlainPath } from '../../../src/model/plain-path.js';

export const MARKER_DIR = '/run/veil-test';
export const PREFIX_PATTERN = /^v[0-9a-z]{5}-$/;
export const UNDERLAY_PREFIX_LENGTH = 24;

export interface BedOptions {
  readonly hosts: number;
  readonly underlayMtu?: number;
  /**
   * "plumbed" (the default): each host's vtep namespace is made now, from this process
   * (IproutePlumbing.ensureHost). "reserved": only named in the marker, so that a gateway makes its own
   * as it would on a real host (test/system/netns/restart.test.ts).
   */
  readonly vtep?: 'plumbed' | 'reserved';
  /** The hosts' plumbing's plain path (default DEFAULT_PLAIN_PATH). */
  readonly plainPath?: PlainPath;
}

export interface BedHost {
  readonly index: number;
  /** The host's netns (where a gateway runs). */
  readonly netns: string;
  readonly vtepNetns: string;
  /** 198.18.0.<index> */
  readonly underlayAddress: string;
  readonly plumbing: IproutePlumbing;
}

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number;
}

/**
 * How long a spawned process may live: "test" (the default) ends with the test that started it,
 * whether it passed or failed (the system tier's afterEach calls stopTestProcesses); "bed" lives until
 * the bed is destroyed (gateways, etcd, fixtures a whole file shares).
 */
export type Lifetime = 'test' | 'bed';

export interface BedProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly lifetime: Lifetime;
  /** Everything written so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the first stdout line matching, rejects if the process exits first or on timeout. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM to its process group, SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<void>;
}

export class BedExecError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: ExecResult,
  ) {
    super(
      `command failed (exit ${result.code}): ${argv.join(' ')}\n${result.stderr.trim()}\n${result.stdout.trim()}`.trim(),
    );
    this.name = 'BedExecError';
  }
}

export interface Bed {
  readonly prefix: string;
  readonly hub: string;
  readonly hosts: readonly BedHost[];
  /** Records `<prefix><label>` in the marker (so cleanup covers it) without creating it. */
  reserve(label: string): string;
  /** Creates namespace `<prefix><label>` with lo up. */
  namespace(label: string): Promise<string>;
  exec(ns: string, argv: readonly string[], opts?: { allowFail?: boolean; timeoutMs?: number }): Promise<ExecResult>;
  /**
   * Runs argv in the namespace. `enter: 'nsenter'` joins only its network namespace (ip netns exec also
   * remounts /sys, where dockerd then finds no cgroups).
   */
  spawn(
    ns: string,
    argv: readonly string[],
    options?: { lifetime?: Lifetime; enter?: 'ip-netns-exec' | 'nsenter' },
  ): BedProcess;
  /** Stops every process of lifetime "test" still running. */
  stopTestProcesses(): Promise<void>;
  /** Namespaces currently present with this bed's prefix. */
  namespaces(): string[];
  destroy(): Promise<void>;
}

// ── process-wide registry and exit hooks ─────────────────────────────────────

const live = new Set<BedImpl>();
let hooksInstalled = false;

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const bed of live) bed.destroySync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      for (const bed of live) bed.destroySync();
      process.removeListener(sig, onSignal);
      // Keep the default behaviour (die by that signal) unless someone else handles it.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

// ── markers ──────────────────────────────────────────────────────────────────

interface Marker {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: tells a live creator from a reused pid. */
  startTime: string;
  created: string;
  namespaces: string[];
}

function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function markerPath(prefix: string): string {
  return join(MARKER_DIR, `${prefix}.json`);
}

function listNetns(): string[] {
  // stderr piped: while other processes delete namespaces, ip prints "Peer netns reference is invalid".
  const out = execFileSync('ip', ['-j', 'netns', 'list'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trim();
  if (out === '') return [];
  return (JSON.parse(out) as Array<{ name: string }>).map((n) => n.name);
}

/** Kills what runs in the namespace (only processes of our test namespaces can be in it) and deletes it. */
function deleteNetnsSync(name: string): void {
  if (!listNetns().includes(name)) return;
  try {
    const pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).split(/\s+/).filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  } catch {
    // the namespace went away meanwhile
  }
  execFileSync('ip', ['netns', 'del', name], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Deletes the namespaces of beds whose creating process is gone (a crashed or SIGKILLed run).
 * Only markers under /run/veil-test whose prefix matches `prefixPattern` are considered, and only the
 * namespaces a marker lists are deleted. Returns the prefixes swept.
 */
export function sweepStale(prefixPattern: RegExp = PREFIX_PATTERN): string[] {
  let files: string[];
  try {
    files = readdirSync(MARKER_DIR);
  } catch {
    return [];
  }
  const swept: string[] = [];
  for (const file of files) {
    if (!file.endsWith('.json')) continue;
    const prefix = file.slice(0, -'.json'.length);
    if (!prefixPattern.test(prefix)) continue;
    let marker: Marker;
    try {
      marker = JSON.parse(readFileSync(join(MARKER_DIR, file), 'utf8')) as Marker;
    } catch {
      continue; // being written, or not ours: leave it
    }
    if (processStartTime(marker.pid) === marker.startTime) continue; // creator still alive
    for (const ns of marker.namespaces) {
      if (ns.startsWith(prefix)) deleteNetnsSync(ns);
    }
    rmSync(join(MARKER_DIR, file), { force: true });
    swept.push(prefix);
  }
  return swept;
}

// ── the bed ──────────────────────────────────────────────────────────────────

function run(file: string, args: readonly string[], timeoutMs: number): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      [...args],
      { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ stdout, stderr: stderr || (error && code === -1 ? error.message : ''), code });
      },
    );
  });
}

class BedImpl implements Bed {
  readonly hub: string;
  readonly hosts: BedHost[] = [];
  private readonly marker: Marker;
  private readonly processes = new Set<BedProcess>();
  private destroyed = false;

  constructor(readonly prefix: string) {
    this.hub = `${prefix}u`;
    this.marker = {
      pid: process.pid,
      startTime: processStartTime(process.pid) ?? '',
      created: new Date().toISOString(),
      namespaces: [],
    };
    mkdirSync(MARKER_DIR, { recursive: true });
    this.writeMarker();
  }

  reserve(label: string): string {
    const name = `${this.prefix}${label}`;
    if (!/^[a-z0-9-]+$/.test(label)) throw new RangeError(`namespace label must be [a-z0-9-]+, got ${label}`);
    if (!this.marker.namespaces.includes(name)) {
      this.marker.namespaces.push(name);
      this.writeMarker();
    }
    return name;
  }

  async namespace(label: string): Promise<string> {
    const name = this.reserve(label);
    await this.must('ip', ['netns', 'add', name]);
    await this.must('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  async exec(
    ns: string,
    argv: readonly string[],
    opts: { allowFail?: boolean; timeoutMs?: number } = {},
  ): Promise<ExecResult> {
    const full = ['netns', 'exec', ns, ...argv];
    const result = await run('ip', full, opts.timeoutMs ?? 30_000);
    if (result.code !== 0 && !opts.allowFail) throw new BedExecError(['ip', ...full], result);
    return result;
  }

  spawn(
    ns: string,
    argv: readonly string[],
    options: { lifetime?: Lifetime; enter?: 'ip-netns-exec' | 'nsenter' } = {},
  ): BedProcess {
    const [file, ...args] =
      options.enter === 'nsenter'
        ? ['nsenter', `--net=/run/netns/${ns}`, ...argv]
        : ['ip', 'netns', 'exec', ns, ...argv];
    // Own process group, so stop() and destroy() reach its children too.
    const child = spawn(file!, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid === undefined) throw new Error(`cannot spawn ${argv.join(' ')} in ${ns}`);
    const pid = child.pid;
    let out = '';
    let err = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('exit', (code, signal) => resolve({ code, signal }));
    });
    let done = false;
    void exited.then(() => (done = true));
    // 'exit' can come before the last of stdout is read; 'close' comes after stdio is drained.
    let closed = false;
    child.on('close', () => (closed = true));
    const proc: BedProcess = {
      child,
      pid,
      lifetime: options.lifetime ?? 'test',
      stdout: () => out,
      stderr: () => err,
      exited,
      waitFor: (pattern, timeoutMs = 10_000) =>
        new Promise((resolve, reject) => {
          const check = (): boolean => {
            const line = out.split('\n').find((l) => pattern.test(l));
            if (line === undefined) return false;
            cleanup();
            resolve(line);
            return true;
          };
          const timer = setTimeout(() => {
            cleanup();
            reject(
              new Error(
                `timeout waiting for ${String(pattern)} from ${argv.join(' ')}; stdout: ${out}; stderr: ${err}`,
              ),
            );
          }, timeoutMs);
          const onClose = (): void => {
            if (check()) return;
            cleanup();
            reject(new Error(`${argv.join(' ')} exited before ${String(pattern)}; stdout: ${out}; stderr: ${err}`));
          };
          const cleanup = (): void => {
            clearTimeout(timer);
            child.stdout?.off('data', check);
            child.off('close', onClose);
          };
          if (check()) return;
          if (closed) return onClose();
          child.stdout?.on('data', check);
          child.on('close', onClose);
        }),
      stop: async (graceMs = 2_000) => {
        if (done) return;
        killGroup(pid, 'SIGTERM');
        const timer = setTimeout(() => killGroup(pid, 'SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
        killGroup(pid, 'SIGKILL'); // stragglers in the group
      },
    };
    this.processes.add(proc);
    void exited.then(() => this.processes.delete(proc));
    return proc;
  }

  async stopTestProcesses(): Promise<void> {
    await Promise.all([...this.processes].filter((p) => p.lifetime === 'test').map((p) => p.stop(1_000)));
  }

  namespaces(): string[] {
    return listNetns().filter((n) => n.startsWith(this.prefix));
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    await Promise.all([...this.processes].map((p) => p.stop(1_000)));
    this.destroySync();
  }

  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    for (const p of this.processes) killGroup(p.pid, 'SIGKILL');
    const errors: string[] = [];
    // Containers and vteps first, the hub last: order is cosmetic, each deletion stands alone.
    for (const ns of [...this.marker.namespaces].reverse()) {
      try {
        deleteNetnsSync(ns);
      } catch (e) {
        errors.push(`${ns}: ${(e as Error).message}`);
      }
    }
    if (errors.length > 0) {
      this.destroyed = false; // let sweepStale or a second call retry; keep the marker
      throw new Error(`bed ${this.prefix}: could not delete ${errors.join('; ')}`);
    }
    rmSync(markerPath(this.prefix), { force: true });
  }

  async build(options: BedOptions): Promise<void> {
    const mtu = String(options.underlayMtu ?? 1500);
    await this.namespace('u');
    await this.must('ip', ['-n', this.hub, 'link', 'add', 'ul0', 'mtu', mtu, 'type', 'bridge']);
    await this.must('ip', ['-n', this.hub, 'link', 'set', 'ul0', 'up']);
    for (let i = 1; i <= options.hosts; i++) {
      const netns = await this.namespace(`h${i}`);
      const underlayAddress = `198.18.0.${i}`;
      await this.must('ip', [
        '-n',
        this.hub,
        'link',
        'add',
        `h${i}`,
        'mtu',
        mtu,
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'mtu',
        mtu,
        'netns',
        netns,
      ]);
      await this.must('ip', ['-n', this.hub, 'link', 'set', `h${i}`, 'master', 'ul0', 'up']);
      await this.must('ip', [
        '-n',
        netns,
        'addr',
        'add',
        `${underlayAddress}/${UNDERLAY_PREFIX_LENGTH}`,
        'dev',
        'eth0',
      ]);
      await this.must('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
      const vtepNetns = this.reserve(`t${i}`);
      const plumbing = new IproutePlumbing({
        hostNetns: netns,
        vtepNetns,
        linkNet: `169.254.${i}.0`,
        underlayMtu: Number(mtu),
        underlayAddress,
        ...(options.plainPath ? { plainPath: options.plainPath } : {}),
      });
      if (options.vtep !== 'reserved') await plumbing.ensureHost();
      this.hosts.push({ index: i, netns, vtepNetns, underlayAddress, plumbing });
    }
  }

  private async must(file: string, args: readonly string[]): Promise<void> {
    const result = await run(file, args, 30_000);
    if (result.code !== 0) throw new BedExecError([file, ...args], result);
  }

  private writeMarker(): void {
    writeFileSync(markerPath(this.prefix), JSON.stringify(this.marker));
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // group already gone
  }
}

function newPrefix(): string {
  const existing = listNetns();
  for (;;) {
    const bytes = randomBytes(5);
    const prefix = `v${[...bytes].map((b) => (b % 36).toString(36)).join('')}-`;
    if (!existing.some((n) => n.startsWith(prefix))) return prefix;
  }
}

/** Stops the processes of lifetime "test" of every live bed (the system tier's afterEach). */
export async function stopTestProcesses(): Promise<void> {
  await Promise.all([...live].map((bed) => bed.stopTestProcesses()));
}

/** Builds a bed; sweeps stale beds of crashed runs first. On a build failure everything created is removed. */
export async function createBed(options: BedOptions): Promise<Bed> {
  if (!Number.isInteger(options.hosts) || options.hosts < 1 || options.hosts > 200) {
    throw new RangeError(`hosts must be in 1..200, got ${options.hosts}`);
  }
  sweepStale();
  installHooks();
  const bed = new BedImpl(newPrefix());
  live.add(bed);
  try {
    await bed.build(options);
  } catch (e) {
    await bed.destroy();
    throw e;
  }
  return bed;
}
