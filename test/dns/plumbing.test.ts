// The DNS plumbing's commands (a fake runner records argv), the resolv.conf writer (in a temp
// directory standing in for /etc/netns and /proc), and the service's attach/detach bookkeeping.
import { mkdirSync, mkdtempSync, readFileSync, existsSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import dnsPacket from 'dns-packet';
import {
  bridgeMac,
  dnsFirewallScript,
  IprouteDnsPlumbing,
  RESOLV_CONF_MARK,
  ResolvConfWriter,
  resolvConfText,
  type DnsPlumbing,
} from '../../src/dns/plumbing.js';
import { DnsService } from '../../src/dns/service.js';
import { RESOLVER_ADDRESS } from '../../src/dns/wire.js';
import type { EndpointRecord, NetworkRecord } from '../../src/store/types.js';
import { networkRecord } from './network-record.js';

/** Records argv; `answer` gives a command's stdout (empty otherwise). */
function recorder(answer: (line: string) => string = () => '') {
  const calls: string[] = [];
  return {
    calls,
    runner: async (file: string, args: readonly string[], input?: string) => {
      const line =
        [file, ...args].join(' ') + (input === undefined ? '' : ` <<< ${input.trimEnd().replace(/\n/g, ' ; ')}`);
      calls.push(line);
      return { stdout: answer(line), stderr: '' };
    },
  };
}

describe('IproutePlumbing for DNS', () => {
  it('host: the resolver address on lo of the vtep netns, no forwarding, strict rp_filter, the firewall', async () => {
    const r = recorder();
    await new IprouteDnsPlumbing({ vtepNetns: 'vt', hostId: 'h1', runner: r.runner }).ensureHost();
    expect(r.calls.slice(0, 2)).toEqual([
      'ip -n vt addr replace 169.254.53.53/32 dev lo',
      'nsenter --net=/run/netns/vt -- sysctl -q -w net.ipv4.ip_forward=0 net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1',
    ]);
    expect(r.calls[2]).toBe(`nsenter --net=/run/netns/vt -- nft ${dnsFirewallScript(RESOLVER_ADDRESS)}`);
    expect(dnsFirewallScript(RESOLVER_ADDRESS)).toMatch(
      /iifname "br\*" ip daddr 169\.254\.53\.53 udp dport 53 accept\n.*tcp dport 53 accept\n.*iifname "br\*" counter name "not_dns" drop$/,
    );
  });

  it("network: the bridge's pinned MAC, no ARP answers, strict rp_filter, the subnet's route from the resolver address", async () => {
    let ifindex = 7;
    const r = recorder((line) => (line.includes('-j link show') ? JSON.stringify([{ ifindex }]) : ''));
    const p = new IprouteDnsPlumbing({ vtepNetns: 'vt', hostId: 'h1', runner: r.runner });
    const setUp = [
      'ip -n vt -j link show dev br42',
      `ip -n vt link set br42 address ${bridgeMac('h1', 42)}`,
      'nsenter --net=/run/netns/vt -- sysctl -q -w net.ipv4.conf.br42.arp_ignore=8 net.ipv4.conf.br42.rp_filter=1',
      'ip -n vt route replace 10.61.0.0/24 dev br42 scope link src 169.254.53.53',
    ];
    await p.ensureNetwork(42, '10.61.0.0/24');
    expect(r.calls).toEqual(setUp);
    // The next container on the same bridge: looked up, nothing set again.
    await p.ensureNetwork(42, '10.61.0.0/24');
    expect(r.calls.slice(4)).toEqual(['ip -n vt -j link show dev br42']);
    // The network made again (another bridge): all of it again.
    ifindex = 9;
    await p.ensureNetwork(42, '10.61.0.0/24');
    expect(r.calls.slice(5)).toEqual(setUp);
  });

  it("endpoint: permanent neighbours both ways and the container's /32 route; a path goes through nsenter", async () => {
    const r = recorder();
    const p = new IprouteDnsPlumbing({ vtepNetns: 'vt', hostId: 'h1', runner: r.runner });
    const script =
      'route replace 169.254.53.53/32 dev eth0 scope link ; ' +
      `neigh replace 169.254.53.53 lladdr ${bridgeMac('h1', 42)} dev eth0 nud permanent`;
    await p.attachEndpoint({
      vni: 42,
      netns: { path: '/var/run/docker/netns/c1' },
      ipv4: '10.61.0.5',
      mac: '02:42:0A:3D:00:05',
    });
    expect(r.calls).toEqual([
      'ip -n vt neigh replace 10.61.0.5 lladdr 02:42:0a:3d:00:05 dev br42 nud permanent',
      `nsenter --net=/var/run/docker/netns/c1 -- ip -batch - <<< ${script}`,
    ]);
    // A path under /run/netns is the name `ip -n` takes: no nsenter.
    await p.attachEndpoint({ vni: 42, netns: { path: '/run/netns/c1' }, ipv4: '10.61.0.5', mac: '02:42:0A:3D:00:05' });
    expect(r.calls.at(-1)).toBe(`ip -n c1 -batch - <<< ${script}`);
    await p.detachEndpoint(42, '10.61.0.5');
    expect(r.calls.at(-1)).toBe('ip -n vt neigh del 10.61.0.5 dev br42');
    await expect(
      p.attachEndpoint({ vni: 42, netns: { name: 'c' }, ipv4: '10.61.0.5; rm', mac: '02:42:0a:3d:00:05' }),
    ).rejects.toThrow(/invalid IPv4/);
  });

  it('bridge MACs: locally administered unicast, per host and VNI, stable', () => {
    const mac = bridgeMac('h1', 42);
    expect(mac).toMatch(/^0e(:[0-9a-f]{2}){5}$/);
    expect(bridgeMac('h1', 42)).toBe(mac);
    expect(bridgeMac('h2', 42)).not.toBe(mac);
    expect(bridgeMac('h1', 43)).not.toBe(mac);
  });

  it('refuses a resolver address inside the host-vtep /30', () => {
    expect(
      () =>
        new IprouteDnsPlumbing({ vtepNetns: 'vt', hostId: 'h1', linkAddresses: ['169.254.53.53', '169.254.53.54'] }),
    ).toThrow(/link/);
    expect(
      () => new IprouteDnsPlumbing({ vtepNetns: 'vt', hostId: 'h1', linkAddresses: ['169.254.47.1', '169.254.47.2'] }),
    ).not.toThrow();
  });
});

describe('resolv.conf', () => {
  let dir: string;
  let w: ResolvConfWriter;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'veil-dns-'));
    w = new ResolvConfWriter({ etcNetns: join(dir, 'etc-netns'), procRoot: join(dir, 'proc') });
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('a named netns: /etc/netns/<name>/resolv.conf, removed with its directory on the last detach', async () => {
    const path = await w.write({ netns: '/run/netns/c1' }, resolvConfText(RESOLVER_ADDRESS, ['Front', 'back']));
    expect(path).toBe(join(dir, 'etc-netns', 'c1', 'resolv.conf'));
    expect(readFileSync(path!, 'utf8')).toBe(`${RESOLV_CONF_MARK}\nnameserver 169.254.53.53\nsearch front back\n`);
    await w.remove({ netns: '/run/netns/c1' });
    expect(existsSync(join(dir, 'etc-netns', 'c1'))).toBe(false);
  });

  it('keeps a resolv.conf it did not write aside and puts it back', async () => {
    mkdirSync(join(dir, 'etc-netns', 'c2'), { recursive: true });
    writeFileSync(join(dir, 'etc-netns', 'c2', 'resolv.conf'), 'nameserver 192.0.2.1\n');
    await w.write({ netns: '/run/netns/c2' }, resolvConfText(RESOLVER_ADDRESS, ['front']));
    await w.write({ netns: '/run/netns/c2' }, resolvConfText(RESOLVER_ADDRESS, ['front', 'back']));
    await w.remove({ netns: '/run/netns/c2' });
    expect(readFileSync(join(dir, 'etc-netns', 'c2', 'resolv.conf'), 'utf8')).toBe('nameserver 192.0.2.1\n');
  });

  it("a {pid} sandbox: its root's /etc/resolv.conf, in place, the original restored; a symlinked /etc or file is refused", async () => {
    mkdirSync(join(dir, 'proc', '42', 'root', 'etc'), { recursive: true });
    const file = join(dir, 'proc', '42', 'root', 'etc', 'resolv.conf');
    writeFileSync(file, 'nameserver 192.0.2.9\n');
    await w.write({ pid: 42 }, resolvConfText(RESOLVER_ADDRESS, ['front']));
    expect(readFileSync(file, 'utf8')).toMatch(/^# veil/);
    await w.remove({ pid: 42 });
    expect(readFileSync(file, 'utf8')).toBe('nameserver 192.0.2.9\n');

    mkdirSync(join(dir, 'proc', '43', 'root'), { recursive: true });
    mkdirSync(join(dir, 'elsewhere'));
    symlinkSync(join(dir, 'elsewhere'), join(dir, 'proc', '43', 'root', 'etc'));
    await expect(w.write({ pid: 43 }, 'x')).rejects.toThrow(/not a directory/);
    mkdirSync(join(dir, 'proc', '44', 'root', 'etc'), { recursive: true });
    symlinkSync(join(dir, 'elsewhere', 'target'), join(dir, 'proc', '44', 'root', 'etc', 'resolv.conf'));
    await expect(w.write({ pid: 44 }, 'x')).rejects.toThrow(/ELOOP|symbolic/);
    expect(existsSync(join(dir, 'elsewhere', 'target'))).toBe(false);
  });

  it("a netns path outside /run/netns: no file (veil cannot know the container's root)", async () => {
    expect(w.pathFor({ netns: '/var/run/docker/netns/abc' })).toBeUndefined();
    expect(w.pathFor({ netns: '/run/netns/../../etc' })).toBeUndefined();
    expect(await w.write({ netns: '/proc/1/ns/net' }, 'x')).toBeUndefined();
  });
});

describe('DnsService bookkeeping', () => {
  const net = networkRecord;
  const FRONT = net('front', '10.1.0.0/24', 100);
  const BACK = net('back', '10.2.0.0/24', 200);
  const ep = (n: NetworkRecord, ipv4: string, extra: Partial<EndpointRecord> = {}): EndpointRecord => ({
    id: `c1-${n.name}`,
    networkId: n.id,
    name: 'c1',
    aliases: [],
    hostId: 'h1',
    mac: '02:42:0a:00:00:05',
    ipv4,
    sandbox: { netns: '/run/netns/c1' },
    ...extra,
  });

  it('attach writes search domains for every network of the container; detach keeps the rest, then removes; the model is re-read after invalidate()', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'veil-dns-'));
    try {
      const calls: string[] = [];
      const plumbing: DnsPlumbing = {
        resolverAddress: RESOLVER_ADDRESS,
        ensureHost: async () => void calls.push('host'),
        openSockets: async () => {
          throw new Error('not in this test');
        },
        ensureNetwork: async (vni, subnet) => void calls.push(`net ${vni} ${subnet}`),
        attachEndpoint: async (e) => void calls.push(`attach ${e.vni} ${e.ipv4}`),
        detachEndpoint: async (vni, ip) => void calls.push(`detach ${vni} ${ip}`),
      };
      let endpoints: EndpointRecord[] = [ep(FRONT, '10.1.0.5')];
      const dns = new DnsService({
        hostId: 'h1',
        model: { networks: () => [FRONT, BACK], endpoints: () => endpoints },
        plumbing,
        resolvConf: { etcNetns: dir },
      });
      const file = join(dir, 'c1', 'resolv.conf');
      await dns.attached(endpoints[0]!, FRONT);
      expect(readFileSync(file, 'utf8')).toMatch(/search front\n/);
      endpoints = [...endpoints, ep(BACK, '10.2.0.5')];
      await dns.attached(endpoints[1]!, BACK);
      expect(readFileSync(file, 'utf8')).toMatch(/search back front\n/);
      expect(calls).toEqual([
        'net 100 10.1.0.0/24',
        'attach 100 10.1.0.5',
        'net 200 10.2.0.0/24',
        'attach 200 10.2.0.5',
      ]);

      const ask = async (from: string, name: string) =>
        dnsPacket.decode(
          (await dns.handle(dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'A', name }] }), from))!,
        );
      expect((await ask('10.1.0.5', 'c1.back')).answers?.map((a) => (a as { data: string }).data)).toEqual([
        '10.2.0.5',
      ]);

      const [front, back] = endpoints;
      endpoints = [back!];
      await dns.detached(front!, FRONT);
      expect(readFileSync(file, 'utf8')).toMatch(/search back\n/);
      expect(calls.at(-1)).toBe('detach 100 10.1.0.5');
      // detached() invalidated the table: front's name is gone at once.
      expect(((await ask('10.1.0.77', 'c1.front')) as { rcode?: string }).rcode).toBe('NXDOMAIN');
      endpoints = [];
      await dns.detached(back!, undefined);
      expect(existsSync(file)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("start removes a resolv.conf of veil's for the vtep netns (never a container), and nobody else's", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'veil-dns-'));
    try {
      const plumbing: DnsPlumbing = {
        resolverAddress: RESOLVER_ADDRESS,
        ensureHost: async () => undefined,
        openSockets: async () => {
          throw new Error('no sockets in this test');
        },
        ensureNetwork: async () => undefined,
        attachEndpoint: async () => undefined,
        detachEndpoint: async () => undefined,
      };
      const start = (vtepNetns: string) =>
        new DnsService({
          hostId: 'h1',
          model: { networks: () => [], endpoints: () => [] },
          plumbing,
          resolvConf: { etcNetns: dir },
          vtepNetns,
        }).start();
      for (const name of ['vt', 'other']) mkdirSync(join(dir, name));
      writeFileSync(join(dir, 'vt', 'resolv.conf'), resolvConfText(RESOLVER_ADDRESS, ['front']));
      writeFileSync(join(dir, 'other', 'resolv.conf'), 'nameserver 192.0.2.53\n');
      await expect(start('vt')).rejects.toThrow(/no sockets/);
      expect(existsSync(join(dir, 'vt'))).toBe(false);
      await expect(start('other')).rejects.toThrow(/no sockets/);
      expect(readFileSync(join(dir, 'other', 'resolv.conf'), 'utf8')).toBe('nameserver 192.0.2.53\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
