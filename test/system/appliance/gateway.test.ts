// `veil gateway` as the appliance runs it: one command with no --cluster-store brings a host up on
// an embedded etcd; a clean stop removes what it plumbed and keeps the identity key and the store;
// with --cluster-store-opt it speaks TLS (client certificate) to etcd. Each gateway runs in a test
// namespace, so the embedded etcd's fixed loopback ports are its own.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCa, issueCertificate } from '../../../src/tls/ca.js';
import { createBed, type Bed, type BedProcess } from '../netns/bed.js';
import { apiRequest } from '../netns/cluster-bed.js';
import { CLI } from '../netns/overlay-bed.js';
import { waitFor, waitUntil } from '../../support/wait.js';

let bed: Bed;
let dir: string;
beforeAll(async () => {
  bed = await createBed({ hosts: 1 });
  dir = mkdtempSync(join(tmpdir(), 'veil-appliance-'));
}, 60_000);
afterAll(async () => {
  await bed?.destroy();
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

const netnsExists = (name: string) => existsSync(`/run/netns/${name}`);

function commandOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined; // gone meanwhile
  }
}

function pidsIn(ns: string): number[] {
  return execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean).map(Number);
}

function gateway(args: string[]): BedProcess {
  const host = bed.hosts[0]!;
  return bed.spawn(host.netns, [
    process.execPath,
    CLI,
    'gateway',
    '--cluster-advertise',
    'eth0',
    '--host-id',
    'solo',
    '--vtep-netns',
    host.vtepNetns,
    '--link-net',
    '169.254.1.0',
    ...args,
  ]);
}

describe('veil gateway with no --cluster-store', () => {
  const data = () => join(dir, 'solo');
  const socket = () => join(dir, 'solo.sock');

  it('starts an embedded etcd under its data dir and comes up on it', async () => {
    const gw = gateway(['--data-dir', data(), '--api-socket', socket()]);
    await gw.waitFor(/"gateway ready"/, 30_000);
    expect(gw.stdout()).toMatch(/"component":"etcd".*"embedded etcd ready"/);
    expect(gw.stdout()).not.toMatch(/"level":40.*simple token/);
    expect(statSync(join(data(), 'etcd')).mode & 0o777).toBe(0o700);
    expect(statSync(join(data(), 'etcd', 'localhost:2379')).isSocket()).toBe(true);
    expect((await apiRequest(socket(), 'GET', '/healthz')).body).toEqual({ status: 'ok' });
    const hosts = (await apiRequest(socket(), 'GET', '/hosts')).body as Array<{ Id: string; Address: string }>;
    expect(hosts.map((h) => [h.Id, h.Address])).toEqual([['solo', '198.18.0.1']]);
    const created = await apiRequest(socket(), 'POST', '/networks', {
      Name: 'kept',
      Driver: 'overlay',
      Options: { encrypted: '' },
      IPAM: { Config: [{ Subnet: '10.88.0.0/24' }] },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const vtep = bed.hosts[0]!.vtepNetns;
    await waitUntil(
      'the network plumbed in the vtep namespace',
      async () => (await bed.exec(vtep, ['ip', 'link', 'show', 'br4096'], { allowFail: true })).code === 0,
      10_000,
    );
    // The gateway and its etcd are the namespace's only long-lived processes: the commands the gateway
    // runs (ip, nft, the DNS socket helper) come and go, so wait for them rather than count a moment.
    const others = () => pidsIn(bed.hosts[0]!.netns).filter((pid) => pid !== gw.pid);
    await waitUntil(
      'only the gateway and its etcd in the host namespace',
      () => {
        const rest = others();
        return rest.length === 1 && commandOf(rest[0]!) === 'etcd';
      },
      15_000,
    );

    // A clean stop: unplumbed (the vtep namespace is gone), etcd stopped, exit 0.
    await gw.stop(15_000);
    expect((await gw.exited).code).toBe(0);
    expect(gw.stdout()).toMatch(/"unplumbed":true/);
    expect(gw.stdout()).toMatch(/"embedded etcd stopped"/);
    expect(netnsExists(vtep)).toBe(false);
    expect(pidsIn(bed.hosts[0]!.netns)).toEqual([]);
    // What it must keep: the identity key (0600) and the store.
    expect(statSync(join(data(), 'identity.key')).mode & 0o777).toBe(0o600);
    expect(existsSync(join(data(), 'etcd', 'data', 'member'))).toBe(true);
  }, 60_000);

  it('restarts on the same data dir with the same identity and the same networks', async () => {
    const before = readFileSync(join(data(), 'identity.key'));
    const gw = gateway(['--data-dir', data(), '--api-socket', socket()]);
    try {
      await gw.waitFor(/"gateway ready"/, 30_000);
      expect(gw.stdout()).toMatch(/"created":false/);
      expect(readFileSync(join(data(), 'identity.key')).equals(before)).toBe(true);
      const networks = (await apiRequest(socket(), 'GET', '/networks')).body as Array<{ Name: string }>;
      expect(networks.map((n) => n.Name)).toEqual(['kept']);
    } finally {
      await gw.stop(15_000);
    }
  }, 60_000);

  it('refuses a second gateway on the same data dir, and leaves the first one serving', async () => {
    const first = gateway(['--data-dir', data(), '--api-socket', socket()]);
    try {
      await first.waitFor(/"gateway ready"/, 30_000);
      const second = gateway(['--data-dir', data(), '--api-socket', join(dir, 'second.sock')]);
      const { code } = await second.exited;
      expect(code).toBe(1);
      // The data directory's lock refuses it before it starts anything, its embedded etcd included.
      expect(second.stderr()).toMatch(/VEIL_ERR_DATA_DIR_IN_USE: .*another veil gateway runs with it/);
      expect(second.stdout()).not.toMatch(/embedded etcd ready/);
      expect((await apiRequest(socket(), 'GET', '/healthz')).status).toBe(200);
      // The operator's way in to the embedded store (README): etcdctl on its unix socket.
      const keys = execFileSync(
        'etcdctl',
        ['--endpoints', `unix://${data()}/etcd/localhost:2379`, 'get', '--prefix', '--keys-only', '/veil/v1/hosts/'],
        { encoding: 'utf8' },
      );
      expect(keys).toMatch(/\/veil\/v1\/hosts\/solo/);
    } finally {
      await first.stop(15_000);
    }
  }, 60_000);
});

describe('veil gateway --cluster-store-opt (etcd over TLS with client certificates)', () => {
  let etcd: ChildProcess | undefined;
  let pki: { ca: string; server: { cert: string; key: string }; client: { cert: string; key: string } };
  const port = 23790;

  beforeAll(async () => {
    const caDir = join(dir, 'etcd-ca');
    await initCa(caDir, { commonName: 'etcd test CA' });
    const server = await issueCertificate(caDir, { name: 'etcd', role: 'server', ips: ['127.0.0.1'] });
    const client = await issueCertificate(caDir, { name: 'gateway', role: 'client' });
    pki = {
      ca: join(caDir, 'ca.crt'),
      server: { cert: server.certPath, key: server.keyPath },
      client: { cert: client.certPath, key: client.keyPath },
    };
    // etcd inside the host's namespace, on its loopback: only the gateway there reaches it.
    etcd = spawn(
      'ip',
      [
        'netns',
        'exec',
        bed.hosts[0]!.netns,
        process.env.ETCD_BIN ?? '/usr/bin/etcd',
        '--name',
        'tls',
        '--data-dir',
        join(dir, 'etcd-tls'),
        '--listen-client-urls',
        `https://127.0.0.1:${port}`,
        '--advertise-client-urls',
        `https://127.0.0.1:${port}`,
        '--listen-peer-urls',
        'http://127.0.0.1:23800',
        '--initial-advertise-peer-urls',
        'http://127.0.0.1:23800',
        '--initial-cluster',
        'tls=http://127.0.0.1:23800',
        '--cert-file',
        pki.server.cert,
        '--key-file',
        pki.server.key,
        '--trusted-ca-file',
        pki.ca,
        '--client-cert-auth',
        '--logger',
        'zap',
        '--log-outputs',
        join(dir, 'etcd-tls.log'),
      ],
      { stdio: 'ignore' },
    );
  }, 60_000);
  afterAll(async () => {
    if (etcd && etcd.exitCode === null) {
      etcd.kill('SIGKILL');
      await new Promise((r) => etcd!.once('exit', r));
    }
  });

  it('registers the host through etcd with TLS; the same etcd refuses a client without a certificate', async () => {
    const socket = join(dir, 'tls.sock');
    const gw = gateway([
      '--cluster-store',
      `etcd://127.0.0.1:${port}`,
      '--cluster-store-opt',
      `kv.cacertfile=${pki.ca}`,
      '--cluster-store-opt',
      `kv.certfile=${pki.client.cert}`,
      '--cluster-store-opt',
      `kv.keyfile=${pki.client.key}`,
      '--data-dir',
      join(dir, 'tls'),
      '--api-socket',
      socket,
    ]);
    try {
      await gw.waitFor(/"gateway ready"/, 30_000);
      expect(gw.stdout()).not.toMatch(/embedded etcd/);
      const hosts = await waitFor(
        async () => {
          const r = (await apiRequest(socket, 'GET', '/hosts')).body as Array<{ Id: string }>;
          return r.length === 1 ? r : undefined;
        },
        10_000,
        'the host listed',
      );
      expect(hosts[0]!.Id).toBe('solo');
      // From inside the namespace: etcdctl without a client certificate is turned away at the handshake.
      const bare = await bed.exec(
        bed.hosts[0]!.netns,
        [
          'etcdctl',
          '--endpoints',
          `https://127.0.0.1:${port}`,
          '--cacert',
          pki.ca,
          '--dial-timeout=2s',
          '--command-timeout=2s',
          'get',
          '--prefix',
          '/veil/v1/hosts/',
        ],
        { allowFail: true },
      );
      expect(bare.code).not.toBe(0);
      const withCert = await bed.exec(
        bed.hosts[0]!.netns,
        [
          'etcdctl',
          '--endpoints',
          `https://127.0.0.1:${port}`,
          '--cacert',
          pki.ca,
          '--cert',
          pki.client.cert,
          '--key',
          pki.client.key,
          'get',
          '--prefix',
          '--keys-only',
          '/veil/v1/hosts/',
        ],
        { allowFail: true },
      );
      expect(withCert.stdout).toMatch(/\/veil\/v1\/hosts\/solo/);
    } finally {
      await gw.stop(15_000);
    }
  }, 60_000);
});
