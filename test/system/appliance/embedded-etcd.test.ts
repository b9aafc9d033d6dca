// The embedded store: the one-member etcd `veil gateway` runs when it has no --cluster-store,
// on unix sockets in a 0700 directory under the gateway's data dir (no TCP port at all).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import {
  embeddedEtcdArgs,
  parseEtcdLogLine,
  startEmbeddedEtcd,
  type EmbeddedEtcd,
} from '../../../src/store/embedded-etcd.js';
import { VeilError } from '../../../src/errors.js';
import { EtcdStore } from '../../../src/store/etcd.js';
import { waitUntil } from '../../support/wait.js';

const root = mkdtempSync(join(tmpdir(), 'veil-embedded-'));
const started: EmbeddedEtcd[] = [];
afterAll(async () => {
  await Promise.all(started.map((e) => e.stop()));
  rmSync(root, { recursive: true, force: true });
});

function memoryLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The TCP ports a process listens on (ss), to show the embedded etcd has none. */
function tcpListeners(pid: number): string[] {
  return execFileSync('ss', ['-Hltnp'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(`pid=${pid},`));
}

async function start(dir: string, extra: { log?: ReturnType<typeof memoryLogger>['log']; bin?: string } = {}) {
  const e = await startEmbeddedEtcd({
    dir,
    log: extra.log ?? memoryLogger().log,
    ...(extra.bin ? { bin: extra.bin } : {}),
  });
  started.push(e);
  return e;
}

describe('startEmbeddedEtcd', () => {
  it('serves the store on a unix socket in a private directory, with no TCP port, and stops', async () => {
    const dir = join(root, 'a', 'etcd');
    const { log, lines } = memoryLogger();
    const e = await start(dir, { log });
    expect(e.endpoints).toEqual([`unix://${dir}/localhost:2379`]);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'localhost:2379')).isSocket()).toBe(true);
    expect(existsSync(join(dir, 'data', 'member'))).toBe(true);
    expect(tcpListeners(e.pid)).toEqual([]);
    expect(lines.some((l) => l.msg === 'embedded etcd ready')).toBe(true);
    // etcd's own lines come through the logger, at debug unless they are warnings or errors.
    expect(lines.some((l) => l.level === 20)).toBe(true);
    expect(lines.filter((l) => Number(l.level) >= 40)).toEqual([]);

    const store = new EtcdStore({ endpoints: e.endpoints });
    try {
      expect((await store.listHosts()).items).toEqual([]);
    } finally {
      await store.close();
    }
    await e.stop();
    expect(alive(e.pid)).toBe(false);
    await e.stop(); // twice is fine
    expect(lines.some((l) => l.msg === 'embedded etcd stopped')).toBe(true);
  });

  it('keeps its data across restarts, also after being killed outright (stale sockets are cleared)', async () => {
    const dir = join(root, 'b', 'etcd');
    const first = await start(dir);
    let store = new EtcdStore({ endpoints: first.endpoints });
    await store.client.put('appliance-test/key').value('kept');
    await store.close();
    process.kill(first.pid, 'SIGKILL');
    await first.exited;
    expect(existsSync(join(dir, 'localhost:2379')), 'a killed etcd leaves its socket').toBe(true);

    const second = await start(dir);
    store = new EtcdStore({ endpoints: second.endpoints });
    try {
      expect(await store.client.get('appliance-test/key').string()).toBe('kept');
    } finally {
      await store.close();
      await second.stop();
    }
  });

  it('refuses a directory another etcd still serves (a second gateway on the same data dir)', async () => {
    const dir = join(root, 'c', 'etcd');
    const first = await start(dir);
    try {
      const err = await start(dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(VeilError);
      expect((err as VeilError).code).toBe('VEIL_ERR_STORE_UNAVAILABLE');
      expect((err as Error).message).toMatch(
        /an etcd already serves .*localhost:2379: is another veil gateway running/,
      );
      // The first one is untouched (its socket was not removed under it).
      const store = new EtcdStore({ endpoints: first.endpoints });
      await store.listHosts().finally(() => store.close());
    } finally {
      await first.stop();
    }
  });

  it('says what to install when there is no etcd binary', async () => {
    const err = await start(join(root, 'd'), { bin: '/nonexistent/etcd' }).catch((e: unknown) => e);
    expect((err as VeilError).code).toBe('VEIL_ERR_STORE_UNAVAILABLE');
    expect((err as Error).message).toMatch(/install etcd-server, or give --cluster-store/);
  });

  it("reports etcd's own reason when it exits during start, and what cannot be made at all", async () => {
    // A data dir whose member/ is a file: etcd starts, cannot use it, and exits.
    const dir = join(root, 'e', 'etcd');
    mkdirSync(join(dir, 'data'), { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, 'data', 'member'), 'not a directory');
    const { log, lines } = memoryLogger();
    const err = await start(dir, { log }).catch((e: unknown) => e);
    expect((err as VeilError).code).toBe('VEIL_ERR_STORE_UNAVAILABLE');
    expect((err as Error).message).toMatch(
      /exited during start .*failed to create snapshot directory: mkdir .*not a directory/,
    );
    expect(lines.some((l) => l.level === 50 && l.msg === 'failed to create snapshot directory')).toBe(true);

    // A directory that cannot be made is refused before etcd starts.
    const file = join(root, 'e-file');
    writeFileSync(file, 'not a directory');
    const early = await start(join(file, 'etcd')).catch((e: unknown) => e);
    expect((early as VeilError).code).toBe('VEIL_ERR_STORE_UNAVAILABLE');
    expect((early as Error).message).toMatch(/directory .*not a directory/);

    // A socket path the kernel cannot take.
    const long = await start(join(root, 'x'.repeat(100), 'etcd')).catch((e: unknown) => e);
    expect((long as Error).message).toMatch(/longer than 107 bytes: use a shorter --data-dir/);
  });

  it('dies with its gateway: a parent killed outright takes etcd along (setpriv --pdeathsig)', async () => {
    const module = resolve('dist/src/store/embedded-etcd.js');
    expect(existsSync(module), 'npm run build first (npm test does)').toBe(true);
    const script = `
      import { startEmbeddedEtcd } from ${JSON.stringify(module)};
      import { pino } from 'pino';
      const e = await startEmbeddedEtcd({ dir: ${JSON.stringify(join(root, 'f', 'etcd'))}, log: pino({ level: 'silent' }) });
      console.log('etcd ' + e.pid);
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      cwd: resolve('.'),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const pid = await new Promise<number>((res, rej) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /etcd (\d+)/.exec(out);
        if (m) res(Number(m[1]));
      });
      child.once('exit', (code) => rej(new Error(`child exited ${code} before starting etcd: ${out}`)));
    });
    expect(alive(pid)).toBe(true);
    child.kill('SIGKILL');
    await waitUntil('etcd to follow its parent', () => !alive(pid), 10_000);
  }, 30_000);
});

describe('etcd command line and log lines', () => {
  it('listens on unix sockets only and reads the member from the data dir after the first start', () => {
    const args = embeddedEtcdArgs('/var/lib/veil/etcd');
    const value = (flag: string) => args[args.indexOf(flag) + 1];
    expect(value('--listen-client-urls')).toBe('unix://localhost:2379');
    expect(value('--listen-peer-urls')).toBe('unix://localhost:2380');
    expect(value('--data-dir')).toBe('/var/lib/veil/etcd/data');
    expect(value('--initial-cluster-state')).toBe('new');
    expect(args.filter((a) => /https?:\/\//.test(a))).toEqual([]);
  });

  it("maps zap levels to the logger's and keeps the fields", () => {
    expect(parseEtcdLogLine('{"level":"warn","ts":"x","caller":"y","msg":"slow fdatasync","took":"1.2s"}')).toEqual({
      level: 'warn',
      msg: 'slow fdatasync',
      fields: { took: '1.2s' },
    });
    expect(
      parseEtcdLogLine('{"level":"fatal","msg":"listen failed","error":"bind: address already in use"}').level,
    ).toBe('error');
    expect(parseEtcdLogLine('{"level":"info","msg":"ready to serve client requests"}').level).toBe('debug');
    expect(parseEtcdLogLine('{"level":"warn","msg":"simple token is not cryptographically signed"}').level).toBe(
      'debug',
    );
    expect(parseEtcdLogLine('plain text')).toEqual({ level: 'debug', msg: 'plain text', fields: {} });
  });
});
