import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { VeilError } from '../errors.js';
import type { Logger } from '../log.js';

/*
 * The embedded default store. `veil gateway` without --cluster-store runs a one-member etcd of its
 * own, the way Docker's daemon keeps a local store, so that one command brings a single host up.
 *
 *   <dir> = <data dir>/etcd, mode 0700
 *     data/            etcd's data, kept across restarts (the networks live there)
 *     localhost:2379   the client socket: a unix socket, not a TCP port, so only the gateway's own
 *     localhost:2380   user reaches the store (the directory is 0700) and no port can clash; the
 *                      peer socket etcd insists on is one too. No other host can join: a cluster of
 *                      hosts uses --cluster-store with an etcd they all reach.
 *                      (etcd 3.4 names unix sockets host:port and makes them in its working directory.)
 *   logs      etcd's JSON (zap) lines on stderr, relayed through the gateway's logger (component "etcd"):
 *             warnings and errors as such, the rest at debug
 *   lifetime  started before the store client and stopped after it (SIGTERM, SIGKILL after a grace), in
 *             a process group of its own so that signals for the gateway's group do not stop it first;
 *             etcd runs under `setpriv --pdeathsig TERM`, so a gateway killed outright takes it along.
 *             etcd leaves its sockets behind when killed and cannot bind over them: a start removes
 *             them, after checking that no etcd still answers there.
 *
 * An operator reaches it with: etcdctl --endpoints unix://<data dir>/etcd/localhost:2379 ...
 */

const CLIENT_SOCKET = 'localhost:2379';
const PEER_SOCKET = 'localhost:2380';
const MEMBER_NAME = 'veil';
const DEFAULT_START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;
/** How many of etcd's last log lines a start failure quotes. */
const TAIL_LINES = 5;
/** Linux sun_path holds 108 bytes with the terminating NUL (unix(7)). */
const MAX_SOCKET_PATH_BYTES = 107;

export interface EmbeddedEtcdOptions {
  /** The embedded store's directory (the gateway passes <data dir>/etcd). */
  dir: string;
  log: Logger;
  /** Default $ETCD_BIN or /usr/bin/etcd (Debian's etcd-server). */
  bin?: string;
  startTimeoutMs?: number;
}

export interface EmbeddedEtcd {
  /** Client URLs for the store: ["unix:///<dir>/localhost:2379"]. */
  readonly endpoints: string[];
  readonly pid: number;
  /** Resolves when etcd has exited, for whatever reason. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM (etcd flushes and exits), SIGKILL after a grace period. Safe to call twice. */
  stop(): Promise<void>;
}

/** etcd's command line; it runs with <dir> as its working directory. Exported for the tests. */
export function embeddedEtcdArgs(dir: string): string[] {
  const client = `unix://${CLIENT_SOCKET}`;
  const peer = `unix://${PEER_SOCKET}`;
  return [
    '--name',
    MEMBER_NAME,
    '--data-dir',
    join(dir, 'data'),
    '--listen-client-urls',
    client,
    '--advertise-client-urls',
    client,
    '--listen-peer-urls',
    peer,
    '--initial-advertise-peer-urls',
    peer,
    // Read on the first start only; later starts take the member from the data dir.
    '--initial-cluster',
    `${MEMBER_NAME}=${peer}`,
    '--initial-cluster-state',
    'new',
    // The store keeps little history (watches resume, or resync after a compaction): an hour is plenty.
    '--auto-compaction-mode',
    'periodic',
    '--auto-compaction-retention',
    '1h',
    '--logger',
    'zap',
    '--log-outputs',
    'stderr',
  ];
}

type Level = 'debug' | 'info' | 'warn' | 'error';

/** Warnings etcd prints at every start of a member without auth: not worth an operator's attention. */
const EXPECTED_WARNINGS = new Set(['simple token is not cryptographically signed']);

/** One zap line → a level, a message and the remaining fields; non-JSON lines pass as they are. */
export function parseEtcdLogLine(line: string): { level: Level; msg: string; fields: Record<string, unknown> } {
  try {
    const j = JSON.parse(line) as Record<string, unknown>;
    const { level, msg, ts: _ts, caller: _caller, ...fields } = j;
    const lv: Level =
      level === 'warn'
        ? EXPECTED_WARNINGS.has(String(msg))
          ? 'debug'
          : 'warn'
        : level === 'error' || level === 'fatal' || level === 'panic' || level === 'dpanic'
          ? 'error'
          : 'debug';
    return { level: lv, msg: typeof msg === 'string' ? msg : line, fields };
  } catch {
    return { level: 'debug', msg: line, fields: {} };
  }
}

/** GET /health on the client socket: {"health":"true"} once the member serves. */
function healthy(socketPath: string): Promise<boolean> {
  return new Promise((done) => {
    const req = request({ socketPath, path: '/health', timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => {
        try {
          done((JSON.parse(body) as { health?: string }).health === 'true');
        } catch {
          done(false);
        }
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => done(false));
    req.end();
  });
}

/** Whether something accepts connections on the socket (a live etcd), as opposed to a stale file. */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((done) => {
    const s = connect({ path: socketPath });
    s.once('connect', () => {
      s.destroy();
      done(true);
    });
    s.once('error', () => done(false));
  });
}

function unavailable(message: string): VeilError {
  return new VeilError('VEIL_ERR_STORE_UNAVAILABLE', message);
}

/** Starts etcd and resolves once it answers /health; rejects (and leaves no process) if it does not. */
export async function startEmbeddedEtcd(opts: EmbeddedEtcdOptions): Promise<EmbeddedEtcd> {
  const bin = opts.bin ?? process.env.ETCD_BIN ?? '/usr/bin/etcd';
  if (!existsSync(bin)) {
    throw unavailable(
      `no --cluster-store given and no etcd to embed at ${bin} (install etcd-server, or give --cluster-store etcd://HOST:PORT)`,
    );
  }
  const dir = resolve(opts.dir);
  const clientSocket = join(dir, CLIENT_SOCKET);
  const peerSocket = join(dir, PEER_SOCKET);
  if (Buffer.byteLength(clientSocket) > MAX_SOCKET_PATH_BYTES) {
    throw unavailable(
      `embedded etcd socket path ${clientSocket} is longer than ${MAX_SOCKET_PATH_BYTES} bytes: use a shorter --data-dir`,
    );
  }
  const log = opts.log;
  if (await answers(clientSocket)) {
    throw unavailable(
      `an etcd already serves ${clientSocket}: is another veil gateway running on the data dir ${dirname(dir)}?`,
    );
  }
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // Left by an etcd that was killed; etcd 3.4 will not bind over them.
    rmSync(clientSocket, { force: true });
    rmSync(peerSocket, { force: true });
  } catch (err) {
    throw unavailable(`embedded etcd directory ${dir}: ${(err as Error).message}`);
  }

  const child = spawn('setpriv', ['--pdeathsig', 'TERM', '--', bin, ...embeddedEtcdArgs(dir)], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
    // A process group of its own: a Ctrl-C (or a kill of the gateway's group) reaches the gateway alone,
    // which stops etcd last, after it has revoked its lease and unplumbed.
    detached: true,
  });
  const tail: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => {
    child.once('exit', (code, signal) => done({ code, signal }));
    // A spawn failure (setpriv missing) emits 'error' and no 'exit'.
    child.once('error', (err) => {
      tail.push(err.message);
      done({ code: -1, signal: null });
    });
  });
  createInterface({ input: child.stderr! }).on('line', (line) => {
    const { level, msg, fields } = parseEtcdLogLine(line);
    tail.push(typeof fields.error === 'string' ? `${msg}: ${fields.error}` : msg);
    if (tail.length > TAIL_LINES) tail.shift();
    if (log.isLevelEnabled(level)) log[level](fields, msg);
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      const { code, signal } = await exited;
      clearTimeout(timer);
      log.info({ code, signal }, 'embedded etcd stopped');
    })();
    return stopping;
  };

  const timeoutMs = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void exited.then(() => (gone = true));
  for (;;) {
    if (gone) {
      const { code, signal } = await exited;
      throw unavailable(
        `embedded etcd exited during start (code ${code}, signal ${signal}): ${tail.join(' | ') || 'no output'}`,
      );
    }
    if (await healthy(clientSocket)) break;
    if (Date.now() > deadline) {
      await stop();
      throw unavailable(
        `embedded etcd did not answer on ${clientSocket} within ${timeoutMs} ms: ${tail.join(' | ') || 'no output'}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  void exited.then(({ code, signal }) => {
    if (!stopping) log.error({ code, signal }, 'embedded etcd exited; the store is unavailable');
  });
  log.info({ endpoint: `unix://${clientSocket}`, dir, pid: child.pid }, 'embedded etcd ready');
  return { endpoints: [`unix://${clientSocket}`], pid: child.pid!, exited, stop };
}
