// Plain networks in the kernel (docs/plumbing.md "Plain networks"), with IproutePlumbing alone: no
// gateway runs, so whatever crosses between hosts went kernel VXLAN to kernel VXLAN on the underlay.
// 3 hosts; plain network 52 on all, encrypted network 53 on host 1. Host 1 lets hosts 2 and 3 in as
// underlay peers at first; host 3 is then taken out and its VXLAN is refused and counted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vxlanName } from '../../../src/host/names.js';
import type { ContainerAttachment } from '../../../src/vxlan/plumbing.js';
import { createBed, type Bed, type BedHost } from './bed.js';

const PLAIN = 52;
const ENC = 53;

interface Container {
  readonly ns: string;
  readonly host: BedHost;
  readonly ip: string;
  readonly mac: string;
}

let bed: Bed;
const containers: Container[] = [];

const ping = async (from: Container, to: Container, extra: readonly string[] = []): Promise<boolean> =>
  (await bed.exec(from.ns, ['ping', '-n', '-q', '-c', '1', '-W', '1', ...extra, to.ip], { allowFail: true })).code ===
  0;

/** What identifies the network's VXLAN device: made again, it would have another ifindex and MAC. */
async function device(host: BedHost, vni = PLAIN) {
  const { stdout } = await bed.exec(host.vtepNetns, ['ip', '-d', '-j', 'link', 'show', vxlanName(vni)]);
  const [link] = JSON.parse(stdout) as Array<{
    ifindex: number;
    address: string;
    link_netnsid?: number;
    linkinfo: { info_data: unknown };
  }>;
  return {
    ifindex: link!.ifindex,
    address: link!.address,
    link_netnsid: link!.link_netnsid,
    data: link!.linkinfo.info_data,
  };
}

beforeAll(async () => {
  bed = await createBed({ hosts: 3 });
  for (const host of bed.hosts) {
    await host.plumbing.ensureNetwork({ vni: PLAIN, encrypted: false });
    const ns = await bed.namespace(`c${host.index}`);
    const ip = `10.52.0.${host.index}`;
    const mac = `02:42:0a:34:00:0${host.index}`;
    const attachment: ContainerAttachment = {
      vni: PLAIN,
      endpointId: `ep-${host.index}`,
      netns: { name: ns },
      mac,
      ipv4: `${ip}/24`,
    };
    await host.plumbing.attachContainer(attachment);
    containers.push({ ns, host, ip, mac });
  }
  await bed.hosts[0]!.plumbing.ensureNetwork({ vni: ENC, encrypted: true });
  for (const host of bed.hosts) {
    for (const peer of bed.hosts.filter((p) => p !== host)) {
      await host.plumbing.ensureUnderlayPeer(peer.underlayAddress);
      await host.plumbing.ensurePeerFlood(PLAIN, peer.underlayAddress);
    }
  }
}, 60_000);

afterAll(async () => {
  await bed?.destroy();
});

describe('plain network in the kernel', () => {
  it('its device lives in the vtep netns, its socket in the host netns on the underlay address', async () => {
    for (const host of bed.hosts) {
      const vx = (await bed.exec(host.vtepNetns, ['ip', '-d', 'link', 'show', vxlanName(PLAIN)])).stdout;
      expect(vx).toContain('mtu 1450 ');
      expect(vx).toMatch(
        new RegExp(`vxlan id ${PLAIN} local ${host.underlayAddress.replace(/\./g, '\\.')} .*dstport 4789 nolearning`),
      );
      expect((await device(host)).link_netnsid, 'its underlay is another netns').toBeDefined();
      expect((await bed.exec(host.netns, ['ss', '-Huln', 'sport', '= 4789'])).stdout).toContain('0.0.0.0:4789');
      // Host 1's vtep netns holds the encrypted network's socket; the others' none at all.
      if (host.index !== 1)
        expect((await bed.exec(host.vtepNetns, ['ss', '-Huln', 'sport', '= 4789'])).stdout).toBe('');
      const fdb = await host.plumbing.listFdb(PLAIN);
      expect(fdb.map((e) => `${e.dst}:${e.port}`).sort()).toEqual(
        bed.hosts.filter((p) => p !== host).map((p) => `${p.underlayAddress}:4789`),
      );
    }
    // The encrypted network keeps its device on the vtep link, its socket in the vtep netns.
    const enc = (await bed.exec(bed.hosts[0]!.vtepNetns, ['ip', '-d', 'link', 'show', vxlanName(ENC)])).stdout;
    expect(enc).toMatch(/vxlan id 53 local 169\.254\.1\.2 /);
    expect((await device(bed.hosts[0]!, ENC)).link_netnsid).toBeUndefined();
  });

  it('containers on every pair of hosts reach each other with no gateway running, full-size frames included', async () => {
    for (const a of containers)
      for (const b of containers.filter((c) => c !== a)) expect(await ping(a, b), `${a.ip} → ${b.ip}`).toBe(true);
    // 1422 bytes of ICMP payload + 28 = 1450, the network MTU: one 1500-byte underlay packet.
    expect(await ping(containers[0]!, containers[1]!, ['-M', 'do', '-s', '1422'])).toBe(true);
    expect(await ping(containers[0]!, containers[1]!, ['-M', 'do', '-s', '1423'])).toBe(false);
    const counters = await bed.hosts[0]!.plumbing.plainNetworkCounters();
    const plain = counters.networks.find((n) => n.vni === PLAIN)!;
    expect(plain.rxPackets).toBeGreaterThan(0);
    expect(plain.txPackets).toBeGreaterThan(0);
    expect(counters.networks.map((n) => n.vni)).toEqual([PLAIN]);
  });

  it('the underlay firewall refuses and counts VXLAN from a host that is no longer a peer', async () => {
    const [h1, , h3] = bed.hosts as [BedHost, BedHost, BedHost];
    const [c1, , c3] = containers as [Container, Container, Container];
    await h1.plumbing.removeUnderlayPeer(h3.underlayAddress);
    await h1.plumbing.removeUnderlayPeer(h3.underlayAddress); // a no-op the second time
    expect(await h1.plumbing.listUnderlayPeers()).toEqual([bed.hosts[1]!.underlayAddress]);
    const before = (await h1.plumbing.plainNetworkCounters()).notAPeer.packets;
    expect(await ping(c3, c1)).toBe(false);
    expect((await h1.plumbing.plainNetworkCounters()).notAPeer.packets).toBeGreaterThan(before);
    await h1.plumbing.ensureUnderlayPeer(h3.underlayAddress);
    expect(await ping(c3, c1)).toBe(true);
  });

  it("plain VXLAN claiming the encrypted network's VNI is dropped and counted, even from a peer", async () => {
    const [h1, h2] = bed.hosts as [BedHost, BedHost];
    // Host 2 joins VNI 53 as a plain network and floods to host 1: a downgrade, from a peer's address.
    await h2.plumbing.ensureNetwork({ vni: ENC, encrypted: false });
    await h2.plumbing.ensurePeerFlood(ENC, h1.underlayAddress);
    const ns = await bed.namespace('d2');
    await h2.plumbing.attachContainer({
      vni: ENC,
      endpointId: 'd2',
      netns: { name: ns },
      mac: '02:42:0a:35:00:02',
      ipv4: '10.53.0.2/24',
    });
    const before = (await h1.plumbing.plainNetworkCounters()).plaintextOnEncrypted.packets;
    await bed.exec(ns, ['ping', '-n', '-q', '-c', '2', '-i', '0.2', '-W', '1', '10.53.0.1'], { allowFail: true });
    expect((await h1.plumbing.plainNetworkCounters()).plaintextOnEncrypted.packets).toBeGreaterThan(before);
    const table = (await bed.exec(h1.netns, ['nft', 'list', 'set', 'inet', 'veil_underlay', 'encrypted_vnis'])).stdout;
    expect(table).toContain('elements = { 0x35 }');
    await h1.plumbing.removeNetwork(ENC);
    expect(
      (await bed.exec(h1.netns, ['nft', 'list', 'set', 'inet', 'veil_underlay', 'encrypted_vnis'])).stdout,
    ).not.toContain('elements');
  });

  it('FDB entries go only where a plain network in the kernel may send: peers’ underlay addresses', async () => {
    const p = bed.hosts[0]!.plumbing;
    await expect(p.ensurePeerFlood(PLAIN, '169.254.64.2')).rejects.toThrow(/not a peer's underlay address/);
    await expect(p.ensurePeerFlood(PLAIN, '127.0.0.1')).rejects.toThrow(/not a peer's underlay address/);
    await expect(p.ensureUnderlayPeer('224.0.0.1')).rejects.toThrow(/not a peer's underlay address/);
    await p.ensureNetwork({ vni: ENC, encrypted: true });
    await expect(p.ensurePeerFlood(ENC, bed.hosts[1]!.underlayAddress)).rejects.toThrow(/not in the peer net/);
  });

  it('ensureHost and ensureNetwork again change nothing and keep the underlay peers', async () => {
    const h = bed.hosts[1]!;
    // Left over from an encrypted network of the same VNI, deleted while no gateway ran.
    await bed.exec(h.netns, ['nft', 'add', 'element', 'inet', 'veil_underlay', 'encrypted_vnis', `{ ${PLAIN} }`]);
    const before = await device(h);
    const peers = await h.plumbing.listUnderlayPeers();
    await h.plumbing.ensureHost();
    await h.plumbing.ensureNetwork({ vni: PLAIN, encrypted: false });
    expect(await device(h)).toEqual(before);
    expect(await h.plumbing.listUnderlayPeers()).toEqual(peers);
    expect(
      (await bed.exec(h.netns, ['nft', 'list', 'set', 'inet', 'veil_underlay', 'encrypted_vnis'])).stdout,
    ).not.toContain('elements');
    expect(await ping(containers[1]!, containers[0]!)).toBe(true);
  });
});
