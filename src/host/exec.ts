import { execFile } from 'node:child_process';
import { constants } from 'node:os';
import { VeilError } from '../errors.js';
import { requireNativeAddon } from './native.js';

/*
 * Running host commands (ip, bridge, nft, sysctl, ethtool): argv arrays, never a shell, each
 * failure a PlumbingError with the argv and its stderr. Everything here is control plane.
 */

export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** `input`, when given, is the command's stdin (ip -batch -, bridge -batch -). */
export type CommandRunner = (file: string, args: readonly string[], input?: string) => Promise<CommandResult>;

export class PlumbingError extends VeilError {
  override readonly name = 'PlumbingError';
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | string | null,
    readonly stderr: string,
  ) {
    super(
      'VEIL_ERR_PLUMBING_COMMAND',
      `(exit ${String(exitCode)}) ${argv.join(' ')}: ${stderr.trim() || '(no stderr)'}`,
    );
  }
}

/** A command still running after this is killed (SIGTERM, then SIGKILL): a wedged `ip` must not hold the plumbing queue. */
export const COMMAND_TIMEOUT_MS = 30_000;
/** Output beyond this (stdout and stderr together) kills the command: no listing veil reads comes near it. */
export const COMMAND_MAX_OUTPUT_BYTES = 64 << 20;

/**
 * Runs argv without a shell through Node's child_process, which forks: the fallback when the native
 * addon cannot be loaded (see execRunner).
 */
export const forkRunner: CommandRunner = (file, args, input) =>
  new Promise((resolve, reject) => {
    const child = execFile(
      file,
      [...args],
      { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS, maxBuffer: COMMAND_MAX_OUTPUT_BYTES },
      (error, stdout, stderr) => {
        if (error) {
          const e = error as NodeJS.ErrnoException & { code?: number | string; signal?: string | null };
          reject(new PlumbingError([file, ...args], e.code ?? e.signal ?? null, stderr || error.message));
        } else {
          resolve({ stdout, stderr });
        }
      },
    );
    // A command that exits before reading all of it closes the pipe: its exit status tells.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });

interface SpawnOutcome {
  status: number | null;
  signal: number | null;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
  overflowed: boolean;
}
/** The addon's spawnRun (native/spawn.c). */
export type SpawnRun = (
  file: string,
  args: string[],
  input: Uint8Array,
  timeoutMs: number,
  maxOutput: number,
) => Promise<SpawnOutcome>;

const signalNames = new Map(Object.entries(constants.signals).map(([name, n]) => [n as number, name]));

/** Runs argv without a shell through the addon's posix_spawn (native/spawn.c); rejects as forkRunner does. */
export function spawnRunnerOf(spawnRun: SpawnRun): CommandRunner {
  return async (file, args, input) => {
    const argv = [file, ...args];
    let r: SpawnOutcome;
    try {
      r = await spawnRun(file, [...args], Buffer.from(input ?? ''), COMMAND_TIMEOUT_MS, COMMAND_MAX_OUTPUT_BYTES);
    } catch (err) {
      throw new PlumbingError(argv, (err as NodeJS.ErrnoException).code ?? null, (err as Error).message);
    }
    const stdout = r.stdout.toString('utf8');
    const stderr = r.stderr.toString('utf8');
    if (r.status === 0 && !r.timedOut && !r.overflowed) return { stdout, stderr };
    const signal = r.signal === null ? null : (signalNames.get(r.signal) ?? `signal ${r.signal}`);
    const why = r.timedOut
      ? `killed after ${COMMAND_TIMEOUT_MS} ms`
      : r.overflowed
        ? `killed after ${COMMAND_MAX_OUTPUT_BYTES} bytes of output`
        : signal
          ? `killed by ${signal}`
          : '';
    throw new PlumbingError(argv, r.status ?? signal, stderr.trim() ? stderr : why);
  };
}

/** How host commands are run, and why (the gateway logs it at start). */
export interface CommandRunnerChoice {
  kind: 'posix_spawn' | 'fork';
  /** Why not posix_spawn, when it is fork. */
  reason?: string;
}

let chosen: { runner: CommandRunner; choice: CommandRunnerChoice } | undefined;

/**
 * posix_spawn through the native addon when it loads: Node's fork copies the gateway's page tables on
 * its event loop for every command (docs/performance.md "the control plane's host commands");
 * otherwise child_process.
 */
export function commandRunnerChoice(): CommandRunnerChoice {
  if (!chosen) {
    try {
      const addon = requireNativeAddon() as { spawnRun?: unknown };
      if (typeof addon.spawnRun !== 'function') throw new Error('the addon has no spawnRun (rebuild it)');
      chosen = { runner: spawnRunnerOf(addon.spawnRun as SpawnRun), choice: { kind: 'posix_spawn' } };
    } catch (err) {
      chosen = { runner: forkRunner, choice: { kind: 'fork', reason: (err as Error).message } };
    }
  }
  return chosen.choice;
}

/** Runs argv without a shell; rejects with PlumbingError on a non-zero exit (commandRunnerChoice says how). */
export const execRunner: CommandRunner = (file, args, input) => {
  commandRunnerChoice();
  return chosen!.runner(file, args, input);
};

/**
 * The lines of an `ip -batch -` or `bridge -batch -` script: one command per line, words split at
 * spaces, so a word may hold no white space (names, addresses and MACs never do; refused otherwise).
 */
export function batchScript(commands: ReadonlyArray<readonly string[]>): string {
  for (const c of commands)
    for (const word of c)
      if (word === '' || /\s/.test(word)) throw new RangeError(`batch word ${JSON.stringify(word)}`);
  return commands.map((c) => c.join(' ')).join('\n') + '\n';
}

/** Parses a command's JSON output (`ip -j`, `bridge -j`, `nft -j`); unparseable output is a PlumbingError. */
export function parseCommandJson<T>(text: string, what: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new PlumbingError([what], null, `unparseable output: ${text.slice(0, 200)}`);
  }
}

/**
 * Runs operations one at a time, in call order; a failed one does not stop the next. Plumbing
 * steps read the state, then change it: two interleaved would each act on a stale read.
 */
export class SerialQueue {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(op: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(op, op);
    this.#tail = next.catch(() => undefined);
    return next;
  }
}
