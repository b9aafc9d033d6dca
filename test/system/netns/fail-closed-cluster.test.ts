// Fail closed through the control plane, with real etcd: host 2 reports Windows (it cannot encrypt,
// so the key schedule gives it no wrapped key). On an encrypted network, traffic between it and
// host 1 is dropped and counted on both sides, never sent as plain VXLAN; the status says so; a plain
// network on the same hosts is the control that shows the capture would see the marker.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseVxlanHeader } from '../../../src/vxlan/wire/vxlan.js';
import type { UdpDatagram } from '../support/pcap.js';
import { waitFor } from '../../support/wait.js';
import { captureUdp } from './capture.js';
import { createClusterBed, type ClusterBed } from './cluster-bed.js';

const MARKER = `veil-fail-closed-${randomBytes(6).toString('hex')}`;
const DATAGRAMS = 50;
let cb: ClusterBed;
const nets = new Map<string, { vni: number; a: { ns: string }; bIp: string; bMac: string }>();

beforeAll(async () => {
  cb = await createClusterBed({ hosts: 2, hostArgs: { 2: ['--os', 'windows'] } });
  for (const [name, options, subnet] of [
    ['enc', { encrypted: '' }, '10.64.0.0/24'],
    ['plain', {}, '10.65.0.0/24'],
  ] as const) {
    const created = await cb.api(1, 'POST', '/networks', {
      Name: name,
      Options: options,
      IPAM: { Config: [{ Subnet: subnet }] },
    });
    expect(created.status).toBe(201);
    if (name === 'enc') expect(created.body.Warning).toMatch(/Windows.*h2/);
    const a = await cb.container(`fc${name}1`);
    const b = await cb.container(`fc${name}2`);
    await cb.api(1, 'POST', `/networks/${name}/connect`, { Container: 'a', Sandbox: { Netns: a.netns } });
    const eb = (await cb.api(2, 'POST', `/networks/${name}/connect`, { Container: 'b', Sandbox: { Netns: b.netns } }))
      .body;
    if (name === 'enc') expect(eb.Warning).toMatch(/Windows host h2.*not be protected/);
    const vni = (await cb.api(1, 'GET', `/networks/${name}`)).body.VNI as number;
    const bIp = eb.IPv4Address.split('/')[0];
    // A static neighbour entry, so the marker leaves the container as a unicast frame without ARP.
    await cb.bed.exec(a.ns, ['ip', 'neigh', 'replace', bIp, 'lladdr', eb.MacAddress, 'dev', 'eth0']);
    nets.set(name, { vni, a, bIp, bMac: eb.MacAddress });
  }
  await waitFor(
    async () =>
      (await cb.api(1, 'GET', '/networks/enc/keys')).body.Epochs?.some((e: { State: string }) => e.State === 'active'),
    20_000,
    'epoch 1 active',
  );
}, 120_000);

afterAll(async () => {
  await cb?.destroy();
}, 60_000);

/** Captures UDP on host 2's underlay while `traffic` runs. */
const captureDuring = (name: string, traffic: () => Promise<void>) =>
  captureUdp(cb.bed, cb.bed.hosts[1]!.netns, cb.dir, name, 'udp', traffic);

async function sendMarker(ns: string, ip: string): Promise<void> {
  const script =
    `const s=require('dgram').createSocket('udp4');let n=0;const m=Buffer.from(process.argv[1]);` +
    `const go=()=>s.send(m,9999,'${ip}',()=>{if(++n<${DATAGRAMS})setTimeout(go,5);else s.close();});go();`;
  await cb.bed.exec(ns, [process.execPath, '-e', script, MARKER]);
}
const hasMarker = (d: UdpDatagram) => Buffer.from(d.payload).includes(MARKER);

it('traffic toward a host that cannot encrypt is dropped and counted, never plain VXLAN; the plain control shows the marker', async () => {
  const enc = nets.get('enc')!;
  const plain = nets.get('plain')!;
  const dropsTo2 = async () =>
    (
      (await cb.api(1, 'GET', '/status')).body.pairs as Array<{
        peer: string;
        vni: number;
        drops: Record<string, number>;
      }>
    ).find((p) => p.peer === 'h2' && p.vni === enc.vni)?.drops['no-outbound-sa'] ?? 0;
  const before = await dropsTo2();
  const wire = await captureDuring('enc', async () => {
    await sendMarker(enc.a.ns, enc.bIp);
    const ping = await cb.bed.exec(enc.a.ns, ['ping', '-n', '-q', '-c', '3', '-i', '0.2', '-W', '1', enc.bIp], {
      allowFail: true,
    });
    expect(ping.code).not.toBe(0);
  });
  const encVxlan = wire.filter((d) => {
    const h = parseVxlanHeader(d.payload);
    return d.dstPort === 4789 && h.ok && h.vni === enc.vni;
  });
  expect(encVxlan, 'the encrypted network in plain VXLAN').toEqual([]);
  expect(wire.filter(hasMarker), 'plaintext marker on the wire').toEqual([]);
  const dropped = (await dropsTo2()) - before;
  console.log(
    `fail closed (cluster): ${dropped} datagrams toward the Windows host dropped as no-outbound-sa; ${encVxlan.length} plain VXLAN of the encrypted VNI on the wire`,
  );
  expect(dropped).toBeGreaterThanOrEqual(DATAGRAMS);

  const st = (await cb.api(1, 'GET', '/networks/enc/status')).body;
  expect(st.Protected).toBe(false);
  expect(st.Summary).toMatch(/not toward h2.*dropped, never sent in plaintext/);
  expect(st.Peers[0]).toMatchObject({ Host: 'h2', OS: 'windows', Protected: false, Outbound: null });
  expect(st.Peers[0].Statement).toMatch(/Windows host.*not protected.*fails closed/);

  const control = await captureDuring('plain', () => sendMarker(plain.a.ns, plain.bIp));
  expect(control.filter((d) => d.dstPort === 4789 && hasMarker(d)).length).toBeGreaterThanOrEqual(DATAGRAMS);
}, 60_000);
