// IproutePlumbing against real namespaces (needs root, iproute2, iputils-ping, nsenter).
// Layout: 3 hosts, network VNI 42 (plain, 10.42.0.0/24), two containers per host; peer j's gateway
// address on every other host is the peer net's + j. Test 3 runs a plain userspace relay per host in place
// of the gateway, which is docs/plumbing.md "One host" end to end with real packets.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlumbingError } from '../../../src/host/exec.js';
import { bridgeName, endpointLinkName, vxlanName } from '../../../src/host/names.js';
import { IproutePlumbing, type ContainerAttachment } from '../../../src/vxlan/plumbing.js';
import { VTEP_DELIVERY_PORT, VTEP_GATEWAY_PORT } from '../../../src/vxlan/wire/constants.js';
import { DEFAULT_PEER_NET, gatewayAddress } from '../../../src/model/peer-net.js';
import { MARKER_DIR, createBed, sweepStale, type Bed, type BedHost, type BedProcess } from './bed.js';

const VNI = 42;
const HOSTS = 3;
const PER_HOST = 2;

interface Container {
  readonly ns: string;
  readonly host: BedHost;
  readonly ip: string;
  readonly attachment: ContainerAttachment;
}

const gateway = (peerIndex: number): string => gatewayAddress(DEFAULT_PEER_NET, peerIndex);

describe('IproutePlumbing on real namespaces', () => {
  let bed: Bed;
  const containers: Container[] = [];
  let relays: BedProcess[] = [];

  const ping = async (from: Container, to: Container, extra: readonly string[] = []): Promise<boolean> => {
    const r = await bed.exec(from.ns, ['ping', '-n', '-q', '-c', '1', '-W', '2', ...extra, to.ip], { allowFail: true });
    return r.code === 0;
  };

  beforeAll(async () => {
    // Plain VXLAN through gateway addresses, as the gateway plain path plumbs it; the kernel path below.
    bed = await createBed({ hosts: HOSTS, plainPath: 'gateway' });
    for (const host of bed.hosts) {
      await host.plumbing.ensureNetwork({ vni: VNI, encrypted: false });
      for (let k = 1; k <= PER_HOST; k++) {
        const n = host.index * 10 + k;
        const ns = await bed.namespace(`c${n}`);
        const ip = `10.42.0.${n}`;
        const attachment: ContainerAttachment = {
          vni: VNI,
          endpointId: `ep-${n}`,
          netns: { name: ns },
          mac: `02:42:0a:2a:00:${n.toString(16).padStart(2, '0')}`,
          ipv4: `${ip}/24`,
          gateway: '10.42.0.254',
        };
        await host.plumbing.attachContainer(attachment);
        containers.push({ ns, host, ip, attachment });
      }
    }
    for (const host of bed.hosts) {
      for (const peer of bed.hosts) {
        if (peer === host) continue;
        await host.plumbing.ensurePeerFlood(VNI, gateway(peer.index));
        for (const c of containers.filter((c) => c.host === peer)) {
          await host.plumbing.ensurePeerMac(VNI, c.attachment.mac, gateway(peer.index));
        }
      }
    }
  });

  afterAll(async () => {
    await bed?.destroy();
    expect(bed ? bed.namespaces() : []).toEqual([]);
  });

  it('(1) containers on the same host reach each other through the bridge', async () => {
    for (const host of bed.hosts) {
      const [a, b] = containers.filter((c) => c.host === host);
      expect(await ping(a!, b!)).toBe(true);
      expect(await ping(b!, a!)).toBe(true);
    }
  });

  it('(2) FDB points each peer at its gateway address, port 1021; VXLAN is nolearning with the derived MTU', async () => {
    for (const host of bed.hosts) {
      const fdb = (await bed.exec(host.vtepNetns, ['bridge', 'fdb', 'show', 'dev', vxlanName(VNI)])).stdout;
      const linkAddr = `169.254.${host.index}.1`;
      expect(host.plumbing.hostAddress).toBe(linkAddr);
      for (const peer of bed.hosts) {
        const line = `00:00:00:00:00:00 dst ${gateway(peer.index)} port ${VTEP_GATEWAY_PORT} self permanent`;
        if (peer === host) expect(fdb).not.toContain(line);
        else expect(fdb).toContain(line);
        for (const c of containers.filter((c) => c.host === peer)) {
          if (peer === host) expect(fdb).not.toContain(c.attachment.mac);
          else
            expect(fdb).toContain(
              `${c.attachment.mac} dst ${gateway(peer.index)} port ${VTEP_GATEWAY_PORT} self permanent`,
            );
        }
      }
      expect(fdb).not.toContain('127.0.0.1');
      const vx = (await bed.exec(host.vtepNetns, ['ip', '-d', 'link', 'show', vxlanName(VNI)])).stdout;
      expect(vx).toContain('mtu 1450 ');
      expect(vx).toContain(`master ${bridgeName(VNI)}`);
      expect(vx).toMatch(new RegExp(`vxlan id ${VNI} local 169\\.254\\.${host.index}\\.2 .*dstport 4789 nolearning`));
      const br = (await bed.exec(host.vtepNetns, ['ip', 'link', 'show', bridgeName(VNI)])).stdout;
      expect(br).toContain('mtu 1450 ');
      for (const c of containers.filter((c) => c.host === host)) {
        const eth0 = (await bed.exec(c.ns, ['ip', 'link', 'show', 'eth0'])).stdout;
        expect(eth0).toContain('mtu 1450 ');
        expect(eth0).toContain(`link/ether ${c.attachment.mac}`);
        expect((await bed.exec(c.ns, ['ip', 'route', 'show', 'default'])).stdout).toContain(
          'default via 10.42.0.254 dev eth0',
        );
        const lo = (await bed.exec(c.ns, ['ip', 'link', 'show', 'lo'])).stdout;
        expect(lo).toMatch(/<LOOPBACK,UP,LOWER_UP>/);
      }
      for (const ns of [host.netns, host.vtepNetns]) {
        expect((await bed.exec(ns, ['ip', 'link', 'show', 'lo'])).stdout).toMatch(/<LOOPBACK,UP,LOWER_UP>/);
      }
      // The vtep namespace is no host on the overlays: no IPv6 address on any of its links
      // (no link-local to answer containers, no RS/MLD chatter flooded to every peer).
      const v6 = (await bed.exec(host.vtepNetns, ['ip', '-6', '-o', 'addr', 'show'])).stdout
        .split('\n')
        .filter((l) => l && !/^\d+: lo /.test(l));
      expect(v6).toEqual([]);
      // The VTEP admits VXLAN only from the gateway's privileged delivery port (docs/plumbing.md "No local injection").
      const firewall = (await bed.exec(host.vtepNetns, ['nft', 'list', 'chain', 'inet', 'veil', 'input'])).stdout;
      expect(firewall).toContain(
        `iifname "to-host" ip saddr 169.254.${host.index}.1 udp sport ${VTEP_DELIVERY_PORT} udp dport 4789 accept`,
      );
      expect(firewall).toMatch(/udp dport 4789 counter name "vtep_injection" drop/);
      // Port security (docs/plumbing.md "Port security"): each container port pinned to its MAC and address,
      // learning off, its MAC a static sticky entry; the VXLAN port is no container port.
      const ports = (await bed.exec(host.vtepNetns, ['nft', 'list', 'table', 'bridge', 'veil_ports'])).stdout;
      expect(ports).toMatch(/iifname vmap @ports\n\s+iifname "ve\*" counter name "port_spoofed" drop/);
      for (const c of containers.filter((c) => c.host === host)) {
        const port = endpointLinkName(VNI, c.attachment.endpointId);
        expect(ports).toContain(`"${port}" : jump port_${port}`);
        expect(ports).toContain(
          `arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether ${c.attachment.mac} arp saddr ip ${c.ip} accept`,
        );
        const link = (await bed.exec(host.vtepNetns, ['bridge', '-d', 'link', 'show', 'dev', port])).stdout;
        expect(link).toMatch(/ learning off /);
        const fdb = (await bed.exec(host.vtepNetns, ['bridge', 'fdb', 'show', 'dev', port])).stdout;
        expect(fdb).toContain(`${c.attachment.mac} sticky master ${bridgeName(VNI)} static`);
      }
      expect(ports).not.toContain(vxlanName(VNI));
      const vxPort = (await bed.exec(host.vtepNetns, ['bridge', '-d', 'link', 'show', 'dev', vxlanName(VNI)])).stdout;
      expect(vxPort).toMatch(/ learning on /);
    }
    // An encrypted network gets underlay − 95 (worst-case ESP-in-UDP overhead).
    const p = bed.hosts[0]!.plumbing;
    await p.ensureNetwork({ vni: 43, encrypted: true });
    const vx43 = (await bed.exec(bed.hosts[0]!.vtepNetns, ['ip', '-d', 'link', 'show', vxlanName(43)])).stdout;
    expect(vx43).toContain('mtu 1405 ');
    expect(vx43).toContain('nolearning');
    await p.removeNetwork(43);
  });

  it('(3) with a plain relay per host, containers on different hosts reach each other (all pairs)', async () => {
    const remotePairs = containers.flatMap((a) =>
      containers.filter((b) => b.host !== a.host).map((b) => [a, b] as const),
    );
    // Without the relays nothing crosses: the vtep's frames stop at 169.254.x.1.
    expect(await ping(containers[0]!, containers[PER_HOST]!, ['-W', '1'])).toBe(false);

    relays = bed.hosts.map((host) => {
      const config = {
        underlay: host.underlayAddress,
        hostAddress: host.plumbing.hostAddress,
        vtepAddress: host.plumbing.vtepAddress,
        deliveryPort: VTEP_DELIVERY_PORT,
        peers: bed.hosts
          .filter((p) => p !== host)
          .map((p) => ({ gateway: gateway(p.index), underlay: p.underlayAddress })),
        gatewayPort: VTEP_GATEWAY_PORT,
      };
      // Test (4) pings through them again: they live as long as the bed.
      return bed.spawn(host.netns, [process.execPath, '--input-type=module', '-e', RELAY, JSON.stringify(config)], {
        lifetime: 'bed',
      });
    });
    await Promise.all(relays.map((r) => r.waitFor(/^ready$/)));

    const results = await Promise.all(
      remotePairs.map(async ([a, b]) => `${a.ip}→${b.ip} ${(await ping(a, b)) ? 'ok' : 'FAIL'}`),
    );
    expect(results.filter((r) => r.endsWith('FAIL'))).toEqual([]);
    expect(results).toHaveLength(HOSTS * PER_HOST * (HOSTS - 1) * PER_HOST);

    // Full-size frames: 1422 bytes of ICMP payload + 28 = 1450 (the network MTU) becomes a 1500-byte
    // underlay packet; one byte more does not leave the container with DF set.
    const [a, b] = [containers[0]!, containers[containers.length - 1]!];
    expect(await ping(a, b, ['-M', 'do', '-s', '1422'])).toBe(true);
    expect(await ping(a, b, ['-M', 'do', '-s', '1423'])).toBe(false);
  });

  it('(4) every ensure operation twice changes nothing', async () => {
    const host = bed.hosts[0]!;
    const mine = containers.filter((c) => c.host === host);
    const before = await snapshot(bed, host, mine);
    for (let round = 0; round < 2; round++) {
      await host.plumbing.ensureHost();
      await host.plumbing.ensureNetwork({ vni: VNI, encrypted: false });
      for (const c of mine) await host.plumbing.attachContainer(c.attachment);
      for (const peer of bed.hosts.filter((p) => p !== host)) {
        await host.plumbing.ensurePeerFlood(VNI, gateway(peer.index));
        for (const c of containers.filter((c) => c.host === peer))
          await host.plumbing.ensurePeerMac(VNI, c.attachment.mac, gateway(peer.index));
      }
    }
    expect(await snapshot(bed, host, mine)).toEqual(before);
    if (relays.length > 0) expect(await ping(mine[0]!, containers[containers.length - 1]!)).toBe(true);
  });

  it('(4) removal is clean and idempotent, for containers given by path and by pid', async () => {
    const hostNs = await bed.namespace('xh');
    const vtepNs = bed.reserve('xt');
    // Plain network 8 in the kernel: its device is made from hostNs (no route needed to make it).
    const p = new IproutePlumbing({
      hostNetns: hostNs,
      vtepNetns: vtepNs,
      linkNet: '169.254.200.0',
      underlayAddress: '198.18.200.1',
    });
    const byPath = await bed.namespace('xc');
    const holder = await bed.namespace('xp');
    const sleeper = bed.spawn(holder, ['sleep', '600']);
    const attachments: ContainerAttachment[] = [
      {
        vni: 7,
        endpointId: 'by-path',
        netns: { path: `/run/netns/${byPath}` },
        mac: '02:00:00:00:07:01',
        ipv4: '10.7.0.1/24',
      },
      {
        vni: 7,
        endpointId: 'by-pid',
        netns: { pid: sleeper.pid },
        mac: '02:00:00:00:07:02',
        ipv4: '10.7.0.2/24',
        ifName: 'ov7',
      },
    ];
    for (let round = 0; round < 2; round++) {
      await p.ensureHost();
      await p.ensureNetwork({ vni: 7, encrypted: true });
      await p.ensureNetwork({ vni: 8, encrypted: false });
      for (const a of attachments) await p.attachContainer(a);
      await p.ensurePeerFlood(7, gateway(1));
      await p.ensurePeerFlood(7, gateway(2));
      await p.ensurePeerMac(7, '02:00:00:00:99:01', gateway(1));
      await p.ensurePeerMac(7, '02:00:00:00:99:02', gateway(2));
    }
    expect(await p.listFdb(7)).toHaveLength(4);
    // The peer net: local on the host end of the link, routed there from the vtep netns (one route each).
    expect(
      (await bed.exec(hostNs, ['ip', 'route', 'show', 'table', 'local', `${DEFAULT_PEER_NET}/18`])).stdout.trim(),
    ).toBe(`local ${DEFAULT_PEER_NET}/18 dev to-vtep scope host`);
    expect((await bed.exec(vtepNs, ['ip', 'route', 'show', `${DEFAULT_PEER_NET}/18`])).stdout.trim()).toBe(
      `${DEFAULT_PEER_NET}/18 via 169.254.200.1 dev to-host`,
    );
    // A gateway address outside the peer net never becomes an FDB entry.
    await expect(p.ensurePeerFlood(7, '169.254.200.1')).rejects.toThrow(/not in the peer net/);
    expect((await bed.exec(holder, ['ip', 'link', 'show', 'ov7'])).stdout).toContain('mtu 1405 ');
    expect(await bed.exec(byPath, ['ping', '-n', '-c', '1', '-W', '2', '10.7.0.2'])).toMatchObject({ code: 0 });

    // A MAC that moves to another peer is replaced, not duplicated.
    await p.ensurePeerMac(7, '02:00:00:00:99:01', gateway(2));
    expect((await p.listFdb(7)).filter((e) => e.mac === '02:00:00:00:99:01')).toEqual([
      { mac: '02:00:00:00:99:01', dst: gateway(2), port: VTEP_GATEWAY_PORT },
    ]);

    // Every removal runs twice: the second call must be a quiet no-op.
    await p.removePeer(7, gateway(2));
    await p.removePeer(7, gateway(2));
    expect(await p.listFdb(7)).toEqual([{ mac: '00:00:00:00:00:00', dst: gateway(1), port: VTEP_GATEWAY_PORT }]);
    // An entry from elsewhere (an older gateway's) goes by removeFdbEntry.
    await p.removeFdbEntry(7, { mac: '00:00:00:00:00:00', dst: gateway(1), port: VTEP_GATEWAY_PORT });
    await p.removeFdbEntry(7, { mac: '00:00:00:00:00:00', dst: gateway(1), port: VTEP_GATEWAY_PORT });
    expect(await p.listFdb(7)).toEqual([]);
    const pinned = async () => (await bed.exec(vtepNs, ['nft', 'list', 'table', 'bridge', 'veil_ports'])).stdout;
    expect(await pinned()).toContain(`port_${endpointLinkName(7, 'by-path')}`);
    await p.detachContainer(7, 'by-path');
    await p.detachContainer(7, 'by-path');
    expect(await pinned()).not.toContain(endpointLinkName(7, 'by-path'));
    expect(await pinned()).toContain(`port_${endpointLinkName(7, 'by-pid')}`);
    expect((await bed.exec(byPath, ['ip', '-o', 'link', 'show'])).stdout.trim().split('\n')).toHaveLength(1); // lo only
    expect(
      (await bed.exec(vtepNs, ['ip', '-o', 'link', 'show', endpointLinkName(7, 'by-path')], { allowFail: true })).code,
    ).not.toBe(0);
    // Removing a network also removes the container veths still attached to it.
    await p.removeNetwork(7);
    await p.removeNetwork(7);
    expect(await pinned()).not.toContain(endpointLinkName(7, 'by-pid'));
    expect((await bed.exec(holder, ['ip', '-o', 'link', 'show'])).stdout.trim().split('\n')).toHaveLength(1);
    const vtepLinks = (await bed.exec(vtepNs, ['ip', '-o', 'link', 'show'])).stdout;
    expect(vtepLinks).not.toMatch(/\b(br7|vx7)\b/);
    expect(vtepLinks).toMatch(/\bvx8\b/);
    expect(await p.listFdb(7)).toEqual([]);
    // vx8's socket is in the host netns, behind the underlay firewall.
    expect((await bed.exec(hostNs, ['ss', '-Huln', 'sport', '= 4789'])).stdout).toContain('0.0.0.0:4789');
    expect((await bed.exec(hostNs, ['nft', 'list', 'tables'])).stdout).toContain('table inet veil_underlay');
    for (let round = 0; round < 2; round++) {
      await p.teardownHost();
      expect(bed.namespaces()).not.toContain(vtepNs);
      expect((await bed.exec(hostNs, ['ip', '-o', 'link', 'show'])).stdout.trim().split('\n')).toHaveLength(1);
      expect((await bed.exec(hostNs, ['ip', '-o', 'addr', 'show'])).stdout).not.toContain('169.254.');
      expect((await bed.exec(hostNs, ['ip', 'route', 'show', 'table', 'all'])).stdout).not.toContain('169.254.');
      expect((await bed.exec(hostNs, ['ss', '-Huln', 'sport', '= 4789'])).stdout).toBe('');
      expect((await bed.exec(hostNs, ['nft', 'list', 'tables'])).stdout).toBe('');
    }
    await sleeper.stop();
  });

  it('refuses a host netns where anyone may bind the VTEP delivery port, before creating anything', async () => {
    const hostNs = await bed.namespace('uh');
    const vtepNs = bed.reserve('ut');
    await bed.exec(hostNs, ['sysctl', '-q', '-w', `net.ipv4.ip_unprivileged_port_start=${VTEP_DELIVERY_PORT}`]);
    const p = new IproutePlumbing({
      hostNetns: hostNs,
      vtepNetns: vtepNs,
      linkNet: '169.254.201.0',
      underlayAddress: '198.18.201.1',
    });
    const err = await p.ensureHost().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PlumbingError);
    expect((err as PlumbingError).message).toMatch(/ip_unprivileged_port_start is 1022 .*inject/);
    expect(bed.namespaces()).not.toContain(vtepNs);
  });

  it("refuses to plumb the host's own network namespace (by name, path or pid) or the vtep namespace as a container", async () => {
    const host = bed.hosts[0]!;
    const pid = (await bed.exec(host.netns, ['sh', '-c', 'sleep 30 >/dev/null 2>&1 & echo $!'])).stdout.trim();
    for (const netns of [{ name: host.netns }, { path: `/run/netns/${host.netns}` }, { pid: Number(pid) }]) {
      const err = await host.plumbing
        .attachContainer({ vni: VNI, endpointId: 'self', netns, mac: '02:00:00:00:00:98', ipv4: '10.42.0.98/24' })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(err, JSON.stringify(netns)).toBeInstanceOf(PlumbingError);
      expect((err as PlumbingError).message).toMatch(/host's own network namespace/);
    }
    // Nor the vtep namespace: a veth end and addresses there would make it a host on the overlay.
    for (const netns of [{ name: host.vtepNetns }, { path: `/run/netns/${host.vtepNetns}` }]) {
      const err = await host.plumbing
        .attachContainer({ vni: VNI, endpointId: 'self', netns, mac: '02:00:00:00:00:98', ipv4: '10.42.0.98/24' })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect((err as PlumbingError).message, JSON.stringify(netns)).toMatch(/is the vtep namespace, not a container's/);
    }
    await bed.exec(host.netns, ['kill', pid], { allowFail: true });
    expect(
      (await bed.exec(host.vtepNetns, ['ip', '-o', 'link', 'show', endpointLinkName(VNI, 'self')], { allowFail: true }))
        .code,
    ).not.toBe(0);
  });

  it('reports failures with the command and its stderr', async () => {
    const p = bed.hosts[0]!.plumbing;
    const err = await p
      .attachContainer({
        vni: VNI,
        endpointId: 'ghost',
        netns: { name: 'veil-no-such-netns' },
        mac: '02:00:00:00:00:99',
        ipv4: '10.42.0.99/24',
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(PlumbingError);
    expect((err as PlumbingError).message).toMatch(/cannot open network namespace \/run\/netns\/veil-no-such-netns/);
    expect((err as PlumbingError).stderr).toMatch(/veil-no-such-netns.*no such file/i);
    // A path that is no namespace fails only when the veth is made, after the port was pinned: the
    // pinning goes with the failed attempt.
    const dir = mkdtempSync(join(tmpdir(), 'veil-notns-'));
    try {
      writeFileSync(join(dir, 'netns'), '');
      const notNs = await p
        .attachContainer({
          vni: VNI,
          endpointId: 'not-a-netns',
          netns: { path: join(dir, 'netns') },
          mac: '02:00:00:00:00:97',
          ipv4: '10.42.0.97/24',
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(notNs).toBeInstanceOf(PlumbingError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const table = (await bed.exec(bed.hosts[0]!.vtepNetns, ['nft', 'list', 'table', 'bridge', 'veil_ports'])).stdout;
    expect(table).not.toContain(endpointLinkName(VNI, 'not-a-netns'));
    expect(table).toContain(
      endpointLinkName(VNI, containers.find((c) => c.host === bed.hosts[0])!.attachment.endpointId),
    );
    // Nothing half-made is left behind.
    expect(
      (
        await bed.exec(bed.hosts[0]!.vtepNetns, ['ip', '-o', 'link', 'show', endpointLinkName(VNI, 'ghost')], {
          allowFail: true,
        })
      ).code,
    ).not.toBe(0);
  });

  it('(5) a bed is removed when its test throws, by sweepStale after SIGKILL, and on SIGTERM', async () => {
    const throwRun = await runFixture('throw');
    expect(throwRun.exitCode).not.toBe(0);
    expect(throwRun.output).toContain('fixture: deliberate failure');
    expect(netnsWithPrefix(throwRun.prefix)).toEqual([]);
    expect(existsSync(join(MARKER_DIR, `${throwRun.prefix}.json`))).toBe(false);

    const sigtermRun = await runFixture('sigterm');
    expect(netnsWithPrefix(sigtermRun.prefix)).toEqual([]);
    expect(existsSync(join(MARKER_DIR, `${sigtermRun.prefix}.json`))).toBe(false);

    const killRun = await runFixture('kill');
    // A SIGKILLed run leaves its namespaces; sweepStale removes them and nothing else.
    expect(netnsWithPrefix(killRun.prefix).length).toBeGreaterThan(0);
    const decoy = 'vzzzzz-x'; // our naming scheme, but no marker: not ours to delete
    await bed.exec(bed.hub, ['true']); // bed alive
    execFileSync('ip', ['netns', 'add', decoy]);
    try {
      const ours = bed.namespaces();
      const swept = sweepStale();
      expect(swept).toContain(killRun.prefix);
      expect(swept).not.toContain(bed.prefix);
      expect(netnsWithPrefix(killRun.prefix)).toEqual([]);
      expect(bed.namespaces()).toEqual(ours);
      expect(netnsWithPrefix('vzzzzz-')).toEqual([decoy]);
    } finally {
      execFileSync('ip', ['netns', 'del', decoy]);
    }
  }, 180_000);
});

// ── helpers ──────────────────────────────────────────────────────────────────

/** Plain relay in place of the gateway: vtep → the peer's gateway address → peer:4789, and underlay:4789 → own vtep. */
const RELAY = `
import dgram from 'node:dgram';
const cfg = JSON.parse(process.argv[1]);
const bind = (s, port, address) => new Promise((ok, fail) => { s.once('error', fail); s.bind(port, address, () => { s.off('error', fail); ok(); }); });
const underlay = dgram.createSocket('udp4');
await bind(underlay, 4789, cfg.underlay);
const toVtep = dgram.createSocket('udp4');
await bind(toVtep, cfg.deliveryPort, cfg.hostAddress); // the vtep netns's firewall admits only this source port
underlay.on('message', (msg) => toVtep.send(msg, 4789, cfg.vtepAddress));
for (const peer of cfg.peers) {
  const s = dgram.createSocket('udp4');
  await bind(s, cfg.gatewayPort, peer.gateway);
  s.on('message', (msg, from) => { if (from.address === cfg.vtepAddress) underlay.send(msg, 4789, peer.underlay); });
}
console.log('ready');
`;

/** Named namespaces with this prefix (of any process's bed): /run/netns holds one file per name. */
function netnsWithPrefix(prefix: string): string[] {
  return existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(prefix)) : [];
}

interface FixtureRun {
  readonly prefix: string;
  readonly exitCode: number | null;
  readonly output: string;
}

async function runFixture(kind: 'throw' | 'kill' | 'sigterm'): Promise<FixtureRun> {
  const dir = mkdtempSync(join(tmpdir(), 'veil-bed-'));
  const info = join(dir, 'info.json');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('VITEST') && k !== 'NODE_ENV' && k !== 'TEST') env[k] = v;
  env['VEIL_BED_FIXTURE'] = kind;
  env['VEIL_BED_INFO'] = info;
  const root = resolve(import.meta.dirname, '../../..');
  const child = spawn(
    process.execPath,
    [
      join(root, 'node_modules/vitest/vitest.mjs'),
      'run',
      '--config',
      'test/system/netns/fixtures/vitest.fixture.config.ts',
    ],
    {
      cwd: root,
      env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
  const exited = new Promise<number | null>((ok) => child.on('exit', (code) => ok(code)));
  try {
    const deadline = Date.now() + 60_000;
    while (!existsSync(info) || readFileSync(info, 'utf8') === '') {
      if (Date.now() > deadline) throw new Error(`fixture ${kind} did not start: ${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const { prefix, pid } = JSON.parse(readFileSync(info, 'utf8')) as { prefix: string; pid: number };
    if (kind === 'kill') process.kill(pid, 'SIGKILL');
    if (kind === 'sigterm') process.kill(pid, 'SIGTERM');
    const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), 60_000);
    const exitCode = await exited;
    clearTimeout(timer);
    return { prefix, exitCode, output };
  } finally {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // exited
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Kernel state that an idempotent ensure must not change (timers and learned entries excluded). */
async function snapshot(bed: Bed, host: BedHost, containers: readonly Container[]): Promise<unknown> {
  const json = async (ns: string, argv: readonly string[]): Promise<unknown> =>
    stripTimers(JSON.parse((await bed.exec(ns, argv)).stdout || '[]'));
  const state: Record<string, unknown> = {};
  for (const ns of [host.netns, host.vtepNetns, ...containers.map((c) => c.ns)]) {
    state[`${ns} link`] = await json(ns, ['ip', '-d', '-j', 'link', 'show']);
    state[`${ns} addr`] = await json(ns, ['ip', '-j', 'addr', 'show']);
    state[`${ns} route`] = await json(ns, ['ip', '-j', 'route', 'show']);
  }
  const fdb = (await json(host.vtepNetns, ['bridge', '-j', 'fdb', 'show'])) as Array<{ state?: string }>;
  state['fdb'] = fdb.filter((e) => e.state === 'permanent');
  // Text, not JSON: rule handles are renumbered when the chain is re-applied, the rules are not.
  state['firewall'] = (await bed.exec(host.vtepNetns, ['nft', 'list', 'table', 'inet', 'veil'])).stdout;
  // Stateless (-s): the counters move with the containers' own IPv6 chatter, the rules do not.
  state['port security'] = (
    await bed.exec(host.vtepNetns, ['nft', '-s', 'list', 'table', 'bridge', 'veil_ports'])
  ).stdout;
  state['bridge ports'] = await json(host.vtepNetns, ['bridge', '-d', '-j', 'link', 'show']);
  state['static fdb'] = fdb.filter((e) => e.state === 'static');
  return state;
}

function stripTimers(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(stripTimers);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([k]) => !k.includes('timer'))
        .map(([k, v]) => [k, stripTimers(v)]),
    );
  }
  return value;
}
