// Isolation between overlay networks across in-process gateways (docs/wire.md "SPI layout", RFC 7348
// §5): three networks whose containers share MACs; a frame of one is never delivered into another,
// not even when the underlay splices, replays or forges datagrams.
import { describe, expect, it } from 'vitest';
import { encodeSpi, parseSpi } from '../../src/vxlan/wire/spi.js';
import { writeU32, readU32 } from '../../src/crypto/bytes.js';
import { encodeVxlanHeader } from '../../src/vxlan/wire/vxlan.js';
import { until, useClusters, type Endpoint } from './harness.js';

const startCluster = useClusters();

describe('isolation', () => {
  it('networks whose containers share MACs each get their own frames only; an ESP datagram spliced into another network, replayed, or plain VXLAN claiming an encrypted VNI, delivers nothing', async () => {
    const cluster = await startCluster({ hosts: 3 });
    const a = await cluster.network('a', { subnet: '10.40.0.0/24' });
    const b = await cluster.network('b', { subnet: '10.41.0.0/24' });
    const c = await cluster.network('c', { encrypted: false, subnet: '10.42.0.0/24' });
    const eps = new Map<string, Endpoint[]>();
    for (const net of [a, b, c]) {
      const list: Endpoint[] = [];
      for (const [i, h] of ['h1', 'h2', 'h3'].entries())
        list.push(await cluster.connect(net, h, `${net.name}-${h}`, `02:42:0a:00:00:0${i + 1}`));
      eps.set(net.name, list);
    }
    const all = [...eps.values()].flat();
    await cluster.settled(all);
    await cluster.activeEverywhere(a);
    await cluster.activeEverywhere(b);
    // The same MACs on every network: only the VNI tells them apart.

    const capture = cluster.wire.capture();
    const markers: string[] = [];
    for (const list of eps.values())
      for (const from of list) for (const to of list) if (from !== to) markers.push(cluster.send(from, to));
    await cluster.delivered(markers);
    capture.stop();
    expect(cluster.notExactlyOnce(markers)).toEqual([]);
    expect(cluster.strays).toEqual([]);

    // The underlay splices a's ESP from h1 to h2 into b (same sender and epoch; b's network index).
    const aFromH1ToH2 = capture.datagrams.filter(
      (d) => d.to.port === 4500 && d.from.address === '198.18.0.1' && d.to.address === '198.18.0.2',
    );
    const ofA = aFromH1ToH2.filter((d) => parseSpi(readU32(d.datagram, 0)).networkIndex === a.index);
    expect(ofA).toHaveLength(1);
    const spliced = ofA[0]!.datagram.slice();
    const fields = parseSpi(readU32(spliced, 0));
    writeU32(spliced, 0, encodeSpi(fields.epochMod4, fields.senderIndex, b.index));
    writeU32(spliced, 4, 1000); // a sequence number b's replay window has not seen: the ICV decides
    const before = cluster.arrivals.size;
    cluster.wire.inject({ from: ofA[0]!.from, to: ofA[0]!.to, datagram: spliced });
    // ... replays a's datagram as it was ...
    cluster.wire.inject({ from: ofA[0]!.from, to: ofA[0]!.to, datagram: ofA[0]!.datagram });
    // ... and sends h2 plain VXLAN from h1's address claiming a's VNI (a downgrade), with a frame for a's container.
    const frameOfA = new Uint8Array(64);
    frameOfA.set(
      eps
        .get('a')![1]!
        .mac.split(':')
        .map((x) => parseInt(x, 16)),
    );
    const forged = new Uint8Array(8 + frameOfA.length);
    forged.set(encodeVxlanHeader(a.vni));
    forged.set(frameOfA, 8);
    cluster.wire.inject({
      from: { address: '198.18.0.1', port: 4789 },
      to: { address: '198.18.0.2', port: 4789 },
      datagram: forged,
    });
    await until('the three forgeries to reach h2', () => cluster.wire.counts.delivered === cluster.wire.counts.sent);

    expect(cluster.arrivals.size).toBe(before);
    expect(cluster.strays).toEqual([]);
    expect(cluster.drops({ hostId: 'h2', vni: b.vni })).toEqual({ 'auth-failed': 1 });
    expect(cluster.drops({ hostId: 'h2', vni: a.vni })).toEqual({ 'replay-duplicate': 1, 'plaintext-on-encrypted': 1 });
    expect(cluster.drops({ vni: c.vni })).toEqual({});
    // b's window did not move for the forgery: b's next frame from h1 still gets through.
    const [b1, b2] = eps.get('b')! as [Endpoint, Endpoint];
    const next = cluster.send(b1, b2);
    await cluster.delivered([next]);
    expect(cluster.notExactlyOnce([next])).toEqual([]);
    expect(cluster.wireProblems()).toEqual({ nonceReuse: 0, plainOnEncrypted: 0, leaks: 0, unknownSealer: 0 });
  });
});
