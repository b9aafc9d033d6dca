import { execFile } from 'node:child_process';
import { VeilError } from '../errors.js';

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

/** Runs argv without a shell; rejects with PlumbingError on a non-zero exit. */
export const execRunner: CommandRunner = (file, args, input) =>
  new Promise((resolve, reject) => {
    const child = execFile(file, [...args], { encoding: 'utf8', timeout: 30_000 }, (error, stdout, stderr) => {
      if (error) {
        const code = (error as NodeJS.ErrnoException & { code?: number | string }).code ?? null;
        reject(new PlumbingError([file, ...args], code, stderr || error.message));
      } else {
        resolve({ stdout, stderr });
      }
    });
    // A command that exits before reading all of it closes the pipe: its exit status tells.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });

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
