// Fail closed (docs/security.md "Lessons from Docker's encrypted overlay", CVE-2023-28841): an encrypted network whose keys are withheld sends
// nothing at all, never VXLAN in the clear; the drops are counted. A plain network on the same hosts
// is the control that shows the capture would see the marker.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { captureUdp } from './capture.js';
import { createOverlayBed, type Container, type NetworkDef, type OverlayBed } from './overlay-bed.js';
import type { UdpDatagram } from '../support/pcap.js';
import { parseVxlanHeader } from '../../../src/vxlan/wire/vxlan.js';

const ENC: NetworkDef = { id: 'enc', index: 1, vni: 4300, encrypted: true, subnet: '10.60.0' };
const PLAIN: NetworkDef = { id: 'plain', index: 2, vni: 4301, encrypted: false, subnet: '10.61.0' };
const MARKER = `veil-fail-closed-${randomBytes(6).toString('hex')}`;
const DATAGRAMS = 50;

let ob: OverlayBed;
const cs = new Map<string, [Container, Container]>();

beforeAll(async () => {
  ob = await createOverlayBed({ hosts: 2, networks: [ENC, PLAIN], withholdKeys: [ENC.id] });
  for (const net of [ENC, PLAIN]) {
    const a = await ob.container(1, net);
    const b = await ob.container(2, net);
    // A static neighbour entry, so the marker leaves the container as a unicast frame without ARP.
    await ob.bed.exec(a.ns, ['ip', 'neigh', 'replace', b.ip, 'lladdr', b.mac, 'dev', 'eth0']);
    cs.set(net.id, [a, b]);
  }
}, 120_000);

afterAll(async () => {
  await ob?.destroy();
});

/** Captures UDP on host 2's underlay while `traffic` runs. */
const captureDuring = (name: string, traffic: () => Promise<void>) =>
  captureUdp(ob.bed, ob.hosts[1]!.netns, ob.dir, name, 'udp', traffic);

async function sendMarker(from: Container, to: Container): Promise<void> {
  const script =
    `const s=require('dgram').createSocket('udp4');let n=0;const m=Buffer.from(process.argv[1]);` +
    `const go=()=>s.send(m,9999,'${to.ip}',()=>{if(++n<${DATAGRAMS})setTimeout(go,5);else s.close();});go();`;
  await ob.bed.exec(from.ns, [process.execPath, '-e', script, MARKER]);
}

const hasMarker = (d: UdpDatagram) => Buffer.from(d.payload).includes(MARKER);

it('an encrypted network without keys puts nothing on the wire, counts the drops, and the plain control shows the marker', async () => {
  const [ea, eb] = cs.get(ENC.id)!;
  const [pa, pb] = cs.get(PLAIN.id)!;
  const before = (await ob.pair(1, 2, ENC.vni))?.drops['no-outbound-sa'] ?? 0;

  const encrypted = await captureDuring('enc', async () => {
    await sendMarker(ea, eb);
    const ping = await ob.bed.exec(ea.ns, ['ping', '-n', '-q', '-c', '3', '-i', '0.2', '-W', '1', eb.ip], {
      allowFail: true,
    });
    expect(ping.code).not.toBe(0);
  });
  // The plain network's own chatter may cross; nothing may carry the encrypted network's VNI.
  const encVxlan = encrypted.filter((d) => {
    const h = parseVxlanHeader(d.payload);
    return d.dstPort === 4789 && h.ok && h.vni === ENC.vni;
  });
  expect(encVxlan, 'the encrypted network in plain VXLAN').toEqual([]);
  expect(encrypted.filter(hasMarker), 'plaintext marker on the wire').toEqual([]);
  expect(encrypted.filter((d) => d.dstPort === 4500 && d.src === ob.hosts[0]!.underlayAddress)).toEqual([]);
  const pair = await ob.pair(1, 2, ENC.vni);
  expect((pair?.drops['no-outbound-sa'] ?? 0) - before).toBeGreaterThanOrEqual(DATAGRAMS);
  expect(pair?.txPackets ?? 0).toBe(0);
  expect(pair?.outbound).toBeUndefined();

  const plain = await captureDuring('plain', () => sendMarker(pa, pb));
  expect(plain.filter((d) => d.dstPort === 4789 && hasMarker(d)).length).toBeGreaterThanOrEqual(DATAGRAMS);
}, 60_000);
