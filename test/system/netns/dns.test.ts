// Container discovery end to end: real etcd, a `veil gateway` per host, containers connected through
// each host's API, and the containers' own resolvers (glibc's getent, dig) asking 169.254.53.53.
//
//   network dnsa (10.71.0.0/24): web1 on h1 (aliases www, svc), web2 on h2 (alias svc)
//   network dnsb (10.72.0.0/24): db on h2 (alias store), lonely on h1
//   each host's upstream: a fake resolver on 127.0.0.1:53 of its own netns (the gateway's resolv.conf
//   comes from /etc/netns/<host netns>/resolv.conf, which `ip netns exec` puts in place)
import { mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../support/wait.js';
import type { BedProcess } from './bed.js';
import { createClusterBed, type ClusterBed } from './cluster-bed.js';
import { CLI } from './overlay-bed.js';

const DIST_TEST = join(CLI, '..', '..', '..', 'test', 'dns');
const RESOLVER = '169.254.53.53';
let cb: ClusterBed;
const upstreams = new Map<number, BedProcess>();
const c: Record<string, { ns: string; netns: string; ip: string; host: number }> = {};

async function connect(
  host: number,
  network: string,
  name: string,
  label: string,
  aliases: string[] = [],
  ipv4?: string,
) {
  const ctr = await cb.container(label);
  const r = await cb.api(host, 'POST', `/networks/${network}/connect`, {
    Container: name,
    Sandbox: { Netns: ctr.netns },
    EndpointConfig: { Aliases: aliases, ...(ipv4 ? { IPAMConfig: { IPv4Address: ipv4 } } : {}) },
  });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  c[name] = { ...ctr, ip: r.body.IPv4Address.split('/')[0], host };
  return c[name]!;
}

const exec = (ns: string, argv: string[]) => cb.bed.exec(ns, argv, { allowFail: true, timeoutMs: 20_000 });
/** getent hosts NAME inside a container: its addresses, [] when not found. */
async function getent(name: string, what: string): Promise<string[]> {
  const r = await exec(c[name]!.ns, ['getent', 'ahostsv4', what]);
  return r.code === 0
    ? [
        ...new Set(
          r.stdout
            .trim()
            .split('\n')
            .map((l) => l.split(/\s+/)[0]!),
        ),
      ]
    : [];
}
async function dig(
  name: string,
  args: string[],
): Promise<{ status: string; flags: string; answers: string[]; raw: string }> {
  const r = await exec(c[name]!.ns, ['dig', '+tries=1', '+time=4', '+nocookie', ...args]);
  const status = /status: (\w+)/.exec(r.stdout)?.[1] ?? `no answer (exit ${r.code})`;
  const flags = /;; flags: ([a-z ]+);/.exec(r.stdout)?.[1] ?? '';
  const answer = r.stdout.split(';; ANSWER SECTION:\n')[1]?.split('\n\n')[0] ?? '';
  return {
    status,
    flags,
    answers: answer
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(/\s+/).at(-1)!),
    raw: r.stdout,
  };
}
const upstreamQueries = (host: number) =>
  upstreams
    .get(host)!
    .stdout()
    .split('\n')
    .filter((l) => l.startsWith('query '))
    .map((l) => l.split(' ')[1]!.toLowerCase());

beforeAll(async () => {
  cb = await createClusterBed({ hosts: 2, startGateways: 0 });
  for (const host of [1, 2]) {
    const ns = cb.bed.hosts[host - 1]!.netns;
    // The gateway's resolv.conf: the fake upstream on this netns's own loopback (never the machine's resolvers).
    mkdirSync(`/etc/netns/${ns}`, { recursive: true });
    writeFileSync(`/etc/netns/${ns}/resolv.conf`, 'nameserver 127.0.0.1\n');
    const up = cb.bed.spawn(ns, [process.execPath, join(DIST_TEST, 'upstream-fixture.js'), '127.0.0.1', '53'], {
      lifetime: 'bed',
    });
    await up.waitFor(/listening/, 10_000);
    upstreams.set(host, up);
    await cb.startGateway(host);
  }
  for (const [name, subnet] of [
    ['dnsa', '10.71.0.0/24'],
    ['dnsb', '10.72.0.0/24'],
  ] as const) {
    const r = await cb.api(1, 'POST', '/networks', {
      Name: name,
      Driver: 'overlay',
      Attachable: true,
      IPAM: { Config: [{ Subnet: subnet }] },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }
  await connect(1, 'dnsa', 'web1', 'c1', ['www', 'svc']);
  await connect(2, 'dnsa', 'web2', 'c2', ['svc']);
  await connect(2, 'dnsb', 'db', 'c3', ['store']);
  await connect(1, 'dnsb', 'lonely', 'c4');
}, 180_000);

// A test that stopped a gateway and failed before starting it again leaves the next test a whole cluster.
afterEach(async () => {
  await cb?.ensureGateways();
}, 60_000);

afterAll(async () => {
  await cb?.destroy();
  // Whatever a gateway did not remove (it removes its containers' files when it stops), and the hosts' own.
  if (cb)
    for (const d of readdirSync('/etc/netns', { withFileTypes: true }))
      if (d.name.startsWith(cb.bed.prefix)) rmSync(join('/etc/netns', d.name), { recursive: true, force: true });
}, 60_000);

describe('embedded DNS across two hosts', () => {
  it('attaching a container points its resolv.conf at the resolver, with its network as search domain', () => {
    const text = readFileSync(`/etc/netns/${c.web1!.ns}/resolv.conf`, 'utf8');
    expect(text).toMatch(new RegExp(`^nameserver ${RESOLVER.replace(/\./g, '\\.')}$`, 'm'));
    expect(text).toMatch(/^search dnsa$/m);
  });

  it('containers on two hosts resolve each other by name, <name>.<network> and alias (getent and dig), and reach each other by name', async () => {
    expect(await getent('web1', 'web2')).toEqual([c.web2!.ip]);
    expect(await getent('web2', 'web1')).toEqual([c.web1!.ip]);
    expect(await getent('web2', 'www')).toEqual([c.web1!.ip]);
    expect(await getent('web1', 'web2.dnsa')).toEqual([c.web2!.ip]);
    const d = await dig('web2', ['web1.dnsa']);
    expect(d).toMatchObject({ status: 'NOERROR', answers: [c.web1!.ip] });
    expect(d.flags.split(' ')).toContain('aa');
    expect((await dig('web1', ['+tcp', 'web2'])).answers, 'over TCP too').toEqual([c.web2!.ip]);
    const ping = await exec(c.web1!.ns, ['ping', '-c', '1', '-W', '3', 'web2']);
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);
  }, 60_000);

  it('a shared alias returns every member, in an order that rotates per query', async () => {
    expect((await getent('web1', 'svc')).sort()).toEqual([c.web1!.ip, c.web2!.ip].sort());
    const orders = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const d = await dig('web2', ['svc']);
      expect([...d.answers].sort()).toEqual([c.web1!.ip, c.web2!.ip].sort());
      orders.add(d.answers.join(','));
    }
    expect(orders.size, 'both orders seen').toBe(2);
  });

  it("PTR for the network's addresses; NXDOMAIN for an unknown name under the network's domain", async () => {
    expect(await exec(c.web1!.ns, ['getent', 'hosts', c.web2!.ip]).then((r) => r.stdout)).toMatch(/\sweb2\.dnsa\b/);
    expect((await dig('web1', ['-x', c.web2!.ip])).answers).toEqual(['web2.dnsa.']);
    const free = await dig('web1', ['-x', '10.71.0.200']);
    expect(free.status).toBe('NXDOMAIN');
    const nope = await dig('web1', ['nope.dnsa']);
    expect(nope.status).toBe('NXDOMAIN');
    expect(nope.flags.split(' ')).toContain('aa');
  });

  it("isolation: a container never learns another network's names; those questions go upstream like any unknown name", async () => {
    expect(await getent('web1', 'db')).toEqual([]);
    expect(await getent('web1', 'store')).toEqual([]);
    expect(await getent('db', 'web1')).toEqual([]);
    expect(await getent('db', 'svc')).toEqual([]);
    expect((await dig('web1', ['db.dnsb'])).status).toBe('NXDOMAIN'); // the fake upstream's
    expect(upstreamQueries(1)).toContain('db.dnsb');
    expect((await dig('web1', ['-x', c.db!.ip])).answers).toEqual([]);
    // …while each network resolves its own.
    expect(await getent('lonely', 'db')).toEqual([c.db!.ip]);
    expect(await getent('db', 'lonely')).toEqual([c.lonely!.ip]);
  });

  it('isolation: a forged source address from another network gets no answer (strict reverse-path filter in the vtep netns)', async () => {
    const ns = c.web1!.ns;
    await cb.bed.exec(ns, ['ip', 'addr', 'add', '10.72.0.250/32', 'dev', 'eth0']);
    try {
      const forged = await dig('web1', ['-b', '10.72.0.250', `@${RESOLVER}`, 'db']);
      expect(forged.status).toMatch(/^no answer/);
    } finally {
      await cb.bed.exec(ns, ['ip', 'addr', 'del', '10.72.0.250/32', 'dev', 'eth0']);
    }
    expect((await dig('web1', ['web2'])).answers, 'the real address still answered').toEqual([c.web2!.ip]);
  });

  it('the vtep netns admits only DNS from a container: nothing else on the resolver address answers', async () => {
    const r = await exec(c.web1!.ns, ['ping', '-c', '1', '-W', '1', RESOLVER]);
    expect(r.code).not.toBe(0);
  });

  it("forwards other names to the host's upstream and passes its answer back unchanged; SERVFAIL when upstream is silent", async () => {
    const d = await dig('web2', ['www.upstream.test']);
    expect(d).toMatchObject({ status: 'NOERROR', answers: ['192.0.2.7'] });
    expect(d.raw).toMatch(/www\.upstream\.test\.\s+4242\s+IN\s+A\s+192\.0\.2\.7/); // upstream's TTL, not ours
    expect(d.raw).toMatch(/"from-fake-upstream"/); // upstream's additional section
    expect(d.flags.split(' ')).toContain('aa'); // upstream's flags
    expect(upstreamQueries(2)).toContain('www.upstream.test');
    expect(await getent('web1', 'x.upstream.test')).toEqual(['192.0.2.7']);
    const t0 = Date.now();
    expect((await dig('web1', ['slow.upstream.test'])).status).toBe('SERVFAIL');
    expect(Date.now() - t0).toBeLessThan(3_900);
    // A network's own names never went upstream (db on h2 asking "web1" or "svc" did: not its network's).
    for (const leaked of ['web2', 'svc', 'www', 'web2.dnsa', 'web1.dnsa'])
      expect(upstreamQueries(1), 'h1').not.toContain(leaked);
    for (const leaked of ['www', 'web1.dnsa', 'web1.dnsb', 'svc.dnsb'])
      expect(upstreamQueries(2), 'h2').not.toContain(leaked);
  }, 30_000);

  it('changes are visible at once: a disconnected container stops resolving, a re-attached one resolves to its new address', async () => {
    const before = c.web2!;
    expect((await cb.api(2, 'POST', '/networks/dnsa/disconnect', { Container: 'web2' })).status).toBe(204);
    const t0 = Date.now();
    await waitFor(async () => (await getent('web1', 'web2')).length === 0, 3_000, "web2 gone from host 1's resolver");
    const gone = Date.now() - t0;
    expect(await getent('web1', 'svc')).toEqual([c.web1!.ip]);
    expect((await dig('web1', ['web2.dnsa'])).status).toBe('NXDOMAIN');
    // "Restarted": a new namespace, the same name, another address; nobody else restarts.
    await connect(2, 'dnsa', 'web2', 'c2b', ['svc'], '10.71.0.77');
    const t1 = Date.now();
    await waitFor(
      async () => (await getent('web1', 'web2')).join() === '10.71.0.77',
      3_000,
      'web2 at its new address on host 1',
    );
    const back = Date.now() - t1;
    expect((await getent('web1', 'svc')).sort()).toEqual([c.web1!.ip, '10.71.0.77'].sort());
    expect(await getent('web2', 'web1')).toEqual([c.web1!.ip]);
    expect(readFileSync(`/etc/netns/${c.web2!.ns}/resolv.conf`, 'utf8')).toMatch(/search dnsa/);
    // The old namespace's resolv.conf went with its endpoint.
    expect(() => readFileSync(`/etc/netns/${before.ns}/resolv.conf`)).toThrow();
    console.log(`[dns] disconnect visible on the other host after ${gone} ms; re-attach after ${back} ms`);
  }, 30_000);

  it('the resolver lives and dies with its gateway: nothing is left running in the vtep netns; a new gateway answers again', async () => {
    const vtep = cb.bed.hosts[0]!.vtepNetns;
    await cb.stopGateway(1, 'SIGKILL');
    const pids = (await cb.bed.exec(cb.bed.hub, ['ip', 'netns', 'pids', vtep])).stdout.trim();
    expect(pids, 'no helper or resolver process left in the vtep netns').toBe('');
    expect((await dig('web1', ['web2'])).status).toMatch(/^no answer/);
    await cb.startGateway(1);
    await waitFor(async () => (await dig('web1', ['web2'])).answers.join() === c.web2!.ip, 20_000, 'h1 answers again');
    expect(await getent('web1', 'www')).toEqual([c.web1!.ip]);
  }, 60_000);

  it('a fuzzed stream of malformed queries from inside a container leaves the resolver (and the gateway) answering', async () => {
    const r = await cb.bed.exec(
      c.web1!.ns,
      [process.execPath, join(DIST_TEST, 'fuzz-sender.js'), RESOLVER, '53', '3000', '53'],
      { timeoutMs: 120_000 },
    );
    expect(r.stdout).toMatch(/sent 3000 udp, 20 tcp/);
    expect((await dig('web1', ['web2'])).answers).toEqual([c.web2!.ip]);
    expect((await dig('web1', ['+tcp', 'svc'])).answers.length).toBe(2);
    expect((await cb.api(1, 'GET', '/status')).status).toBe(200);
    expect(cb.gateways.get(1)!.child.exitCode).toBeNull();
    expect(cb.gateways.get(1)!.stdout()).not.toMatch(/dns: internal error/);
  }, 150_000);
});
