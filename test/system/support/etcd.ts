import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/*
 * Throwaway etcd servers for tests (Debian etcd-server 3.4): loopback ports chosen by
 * the kernel, one temp data dir removed by stop(), and every process killed on stop()
 * and, as a last resort, when the test process exits. scripts/etcd-test.sh does the
 * same for humans and CI.
 */

export const ETCD_BIN = process.env.ETCD_BIN ?? '/usr/bin/etcd';

export interface EtcdCluster {
  /** Client URLs, one per member, e.g. http://127.0.0.1:40123. */
  readonly endpoints: string[];
  readonly dataDir: string;
  /** Stops member i (SIGTERM, or SIGKILL to simulate a crash) and waits for it to exit. */
  stopMember(i: number, signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** Restarts member i on the same ports and data dir; resolves when it answers /health. */
  startMember(i: number): Promise<void>;
  /** Kills every member and removes the data dir. Safe to call twice. */
  stop(): Promise<void>;
}

interface Member {
  name: string;
  client: string;
  peer: string;
  proc: ChildProcess | null;
}

/*
 * Each member runs under a small bash watchdog whose stdin is a pipe from this process.
 * If this process dies in any way (a crash, SIGKILL, a killed vitest worker), the pipe
 * reaches EOF and the watchdog kills etcd and removes the data dir. SIGTERM to the
 * watchdog stops etcd gracefully, SIGUSR1 kills it (a crash), and the watchdog exits
 * when etcd does.
 */
const WATCHDOG = `
exec 3<&0
data_root=$1; shift
"$@" </dev/null >/dev/null 2>&1 &
e=$!
{ cat <&3 >/dev/null; kill -KILL "$e" 2>/dev/null; } &
w=$!
trap 'kill -TERM "$e" 2>/dev/null' TERM
trap 'kill -KILL "$e" 2>/dev/null' USR1
while kill -0 "$e" 2>/dev/null; do wait "$e"; done
if kill -0 "$PPID" 2>/dev/null; then kill "$w" 2>/dev/null; else sleep 0.3; rm -rf "$data_root"; fi
`;

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const p of live) p.kill('SIGUSR1');
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function healthy(client: string): Promise<boolean> {
  try {
    const r = await fetch(`${client}/health`, { signal: AbortSignal.timeout(1000) });
    const j = (await r.json()) as { health?: string };
    return j.health === 'true';
  } catch {
    return false;
  }
}

/** Inside a namespace the test process cannot connect; etcdctl runs there instead. */
function healthyIn(netns: string, client: string): Promise<boolean> {
  return new Promise((resolve) => {
    const p = spawn(
      'ip',
      [
        'netns',
        'exec',
        netns,
        'etcdctl',
        '--endpoints',
        client,
        '--dial-timeout=1s',
        '--command-timeout=1s',
        'endpoint',
        'health',
      ],
      { stdio: 'ignore' },
    );
    p.once('exit', (code) => resolve(code === 0));
    p.once('error', () => resolve(false));
  });
}

async function waitHealthy(members: Member[], timeoutMs: number, netns?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = await Promise.all(members.map((m) => (netns ? healthyIn(netns, m.client) : healthy(m.client))));
    if (states.every(Boolean)) return;
    if (Date.now() > deadline)
      throw new Error(`etcd not healthy after ${timeoutMs} ms: ${members.map((m) => m.client).join(', ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Without `netns`: members on loopback ports chosen by the kernel. With `netns` and `address`: the
 * members run inside that (test-made) namespace on address:23790+i (clients) and 127.0.0.1:23800+i (peers),
 * as an etcd host on a test bed's underlay.
 */
export async function startEtcd(
  opts: { members?: 1 | 3; netns?: string; address?: string } = {},
): Promise<EtcdCluster> {
  installExitHook();
  const n = opts.members ?? 1;
  const dataDir = mkdtempSync(join(tmpdir(), 'veil-etcd-'));
  const members: Member[] = [];
  for (let i = 0; i < n; i++) {
    members.push(
      opts.netns
        ? {
            name: `m${i}`,
            client: `http://${opts.address ?? '127.0.0.1'}:${23790 + i}`,
            peer: `http://127.0.0.1:${23800 + i}`,
            proc: null,
          }
        : {
            name: `m${i}`,
            client: `http://127.0.0.1:${await freePort()}`,
            peer: `http://127.0.0.1:${await freePort()}`,
            proc: null,
          },
    );
  }
  const initialCluster = members.map((m) => `${m.name}=${m.peer}`).join(',');
  const token = `veil-${process.pid}-${Date.now()}`;

  const spawnMember = (m: Member): void => {
    const proc = spawn(
      opts.netns ? 'ip' : 'bash',
      [
        ...(opts.netns ? ['netns', 'exec', opts.netns, 'bash'] : []),
        '-c',
        WATCHDOG,
        'etcd-watchdog',
        dataDir,
        ETCD_BIN,
        '--name',
        m.name,
        '--data-dir',
        join(dataDir, m.name),
        '--listen-client-urls',
        m.client,
        '--advertise-client-urls',
        m.client,
        '--listen-peer-urls',
        m.peer,
        '--initial-advertise-peer-urls',
        m.peer,
        '--initial-cluster',
        initialCluster,
        '--initial-cluster-state',
        'new',
        '--initial-cluster-token',
        token,
        '--logger',
        'zap',
        '--log-outputs',
        join(dataDir, `${m.name}.log`),
      ],
      { stdio: ['pipe', 'ignore', 'ignore'] },
    );
    live.add(proc);
    proc.once('exit', () => live.delete(proc));
    m.proc = proc;
  };

  const stopMember = async (i: number, signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> => {
    const m = members[i];
    if (!m) throw new RangeError(`no member ${i}`);
    const proc = m.proc;
    m.proc = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill(signal === 'SIGKILL' ? 'SIGUSR1' : 'SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGUSR1'), 5000);
    await exited;
    clearTimeout(timer);
  };

  let stopped = false;
  const cluster: EtcdCluster = {
    endpoints: members.map((m) => m.client),
    dataDir,
    stopMember,
    async startMember(i) {
      const m = members[i];
      if (!m) throw new RangeError(`no member ${i}`);
      if (m.proc) return;
      spawnMember(m);
      // A lone restarted member of a 3-member cluster answers /health once it has rejoined quorum.
      await waitHealthy([m], 30_000, opts.netns);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await Promise.all(members.map((_, i) => stopMember(i, 'SIGKILL')));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };

  try {
    for (const m of members) spawnMember(m);
    await waitHealthy(members, 30_000, opts.netns);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}
