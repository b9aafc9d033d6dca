// A killed gateway always comes back (docs/plumbing.md "The vtep namespace's mount"). Each gateway runs
// under `ip netns exec`, as `npm run demo` runs them, in a mount namespace of its own, and makes its own
// vtep namespace: the bed only reserves the names. Real etcd, two hosts, an encrypted network with a
// container on each host.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { waitFor, waitUntil } from '../../support/wait.js';
import { cleanUpClusterBed } from './cluster-hooks.js';
import { createClusterBed, type ClusterBed } from './cluster-bed.js';

const RESOLVER = '169.254.53.53';
let cb: ClusterBed;
const c: Record<string, { ns: string; ip: string }> = {};

/** A namespace file holds a namespace when it is a bind mount of one: it is then on nsfs, like /proc/self/ns/net. */
function holdsNamespace(path: string): boolean {
  try {
    return statSync(path).dev === statSync('/proc/self/ns/net').dev;
  } catch {
    return false;
  }
}

const vtep = () => cb.bed.hosts[0]!.vtepNetns;
const exec = (ns: string, argv: string[]) => cb.bed.exec(ns, argv, { allowFail: true, timeoutMs: 20_000 });
const ping = async (from: string, to: string, count = 1) =>
  (await exec(c[from]!.ns, ['ping', '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '2', c[to]!.ip])).code === 0;

async function bothWays(): Promise<void> {
  await waitFor(() => ping('a', 'b'), 30_000, 'a (host 1) reaches b (host 2)');
  expect(await ping('b', 'a', 3)).toBe(true);
}

beforeAll(async () => {
  cb = await createClusterBed({ hosts: 2, vtep: 'reserved' });
  const r = await cb.api(1, 'POST', '/networks', {
    Name: 'rst',
    Options: { encrypted: '' },
    IPAM: { Config: [{ Subnet: '10.95.0.0/24' }] },
  });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  for (const [name, host] of [
    ['a', 1],
    ['b', 2],
  ] as const) {
    const ctr = await cb.container(`r${name}`);
    const res = await cb.api(host, 'POST', '/networks/rst/connect', {
      Container: `r${name}`,
      Sandbox: { Netns: ctr.netns },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    c[name] = { ns: ctr.ns, ip: (res.body.IPv4Address as string).split('/')[0]! };
  }
  await bothWays();
}, 180_000);

cleanUpClusterBed(() => cb);

describe('a gateway started under ip netns exec', () => {
  it('mounts its vtep namespace where the host sees it, not only in its own mount namespace', async () => {
    expect(holdsNamespace(`/run/netns/${vtep()}`), `/run/netns/${vtep()} in the host's mount namespace`).toBe(true);
    expect((await exec(vtep(), ['ip', '-o', 'link', 'show', 'to-host'])).code).toBe(0);
  });

  it('killed (SIGKILL) and started again, it comes back: the vtep namespace outlived it, the containers kept their links', async () => {
    await cb.stopGateway(1, 'SIGKILL');
    const outlived = holdsNamespace(`/run/netns/${vtep()}`);
    const kept = (await exec(c.a!.ns, ['ip', '-o', 'addr', 'show', 'eth0'])).stdout.includes(`inet ${c.a!.ip}/24`);
    await cb.startGateway(1);
    await bothWays();
    expect(outlived, 'the vtep namespace outlived its gateway').toBe(true);
    expect(kept, 'a kept its link while no gateway ran').toBe(true);
  }, 90_000);

  it('a vtep namespace file whose mount is gone is made again, and the containers whose veths died with it are attached again', async () => {
    await cb.stopGateway(1, 'SIGKILL');
    // What a gateway killed in a mount namespace of its own leaves: the old namespace gone (and with it
    // every veth in it), its file in /run/netns still there, empty. `ip netns add` in a throwaway mount
    // namespace that receives but does not send mounts makes exactly that.
    execFileSync('ip', ['netns', 'del', vtep()]);
    execFileSync('unshare', ['--mount', '--propagation', 'slave', 'ip', 'netns', 'add', vtep()]);
    expect(existsSync(`/run/netns/${vtep()}`)).toBe(true);
    expect(holdsNamespace(`/run/netns/${vtep()}`)).toBe(false);
    expect((await exec(cb.bed.hub, ['ip', '-n', vtep(), 'link', 'show'])).stderr).toMatch(/Invalid argument/);
    // The kernel tears a namespace down in the background once its last reference goes: wait for it.
    await waitUntil(
      "a's veth to die with the namespace",
      async () => (await exec(c.a!.ns, ['ip', '-o', 'link', 'show', 'eth0'])).code !== 0,
      15_000,
    );
    // A resolv.conf of veil's for the vtep namespace itself (never a container) is an orphan: it goes.
    const orphan = `/etc/netns/${vtep()}/resolv.conf`;
    mkdirSync(`/etc/netns/${vtep()}`, { recursive: true });
    writeFileSync(orphan, "# veil: embedded DNS of this container's overlay networks\nnameserver 169.254.53.53\n");

    const gw = await cb.startGateway(1);
    expect(gw.stdout()).toMatch(/vtep namespace file holds no namespace; making it again/);
    expect(holdsNamespace(`/run/netns/${vtep()}`)).toBe(true);
    expect(existsSync(orphan)).toBe(false);
    await waitFor(
      async () => (await exec(c.a!.ns, ['ip', '-o', 'addr', 'show', 'eth0'])).stdout.includes(`inet ${c.a!.ip}/24`),
      20_000,
      'a attached again by the agent',
    );
    await bothWays();
    // Its resolver configuration came back with it.
    expect(readFileSync(`/etc/netns/${c.a!.ns}/resolv.conf`, 'utf8')).toContain(`nameserver ${RESOLVER}`);
    const dig = await exec(c.a!.ns, ['dig', '+short', '+tries=1', '+time=2', `@${RESOLVER}`, 'rb']);
    expect(dig.stdout.trim()).toBe(c.b!.ip);
  }, 120_000);

  it('refuses to start where its vtep namespace could not outlive it, and says which mount is missing', async () => {
    await cb.stopGateway(1, 'SIGTERM');
    expect(existsSync(`/run/netns/${vtep()}`), 'a clean stop removes the vtep namespace').toBe(false);
    // A mount namespace whose /run/netns shares nothing with the host's (a container's private volume).
    const started = cb.startGateway(1, [], { launcher: ['unshare', '--mount', '--propagation', 'private'] });
    await expect(started).rejects.toThrow(
      /vtep namespace .* would not outlive the gateway: \/run\/netns is a private mount .*rshared/,
    );
    expect(existsSync(`/run/netns/${vtep()}`), 'nothing made').toBe(false);
    // afterEach starts it again the ordinary way; the containers come back.
    await cb.ensureGateways();
    await bothWays();
  }, 120_000);
});
