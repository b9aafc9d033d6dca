// Fail closed across a cluster (docs/architecture.md glossary "fail closed"): a frame of an encrypted
// network that its gateway holds no outbound SA for is dropped as no-outbound-sa and counted, and
// nothing of that network ever crosses the wire in plain.
import { describe, expect, it } from 'vitest';
import { until, useClusters, type Endpoint } from './harness.js';

const startCluster = useClusters();

/** Every ordered pair once. */
const allPairs = (eps: readonly Endpoint[]) =>
  eps.flatMap((a) => eps.filter((b) => b !== a).map((b) => [a, b] as const));

describe('fail closed', () => {
  it('before the first epoch (no leader runs) every frame is dropped as no-outbound-sa and nothing reaches the wire; once a leader publishes, frames cross sealed', async () => {
    const cluster = await startCluster({ hosts: 3 });
    for (const h of cluster.running()) await h.node.leader.stop();
    const net = await cluster.network('secure');
    const eps = [];
    for (const h of ['h1', 'h2', 'h3']) eps.push(await cluster.connect(net, h, `c-${h}`));
    await cluster.settled(eps);
    expect(await cluster.epochs(net)).toEqual([]);

    const capture = cluster.wire.capture();
    const early = allPairs(eps).map(([a, b]) => cluster.send(a, b));
    await until('every frame to be dropped', () => cluster.drops({ vni: net.vni })['no-outbound-sa'] === early.length);
    expect(cluster.arrivals.size).toBe(0);
    expect(cluster.drops({ vni: net.vni })).toEqual({ 'no-outbound-sa': early.length });
    expect(capture.datagrams).toEqual([]);

    // A restarted gateway brings a leader back: epoch 1 is published, installed and activated everywhere.
    await cluster.restart('h1');
    await cluster.settled(eps);
    expect(await cluster.activeEverywhere(net)).toBe(1);
    const later = allPairs(eps).map(([a, b]) => cluster.send(a, b));
    await cluster.delivered(later);
    expect(cluster.notExactlyOnce(later)).toEqual([]);
    expect(capture.datagrams.length).toBe(later.length);
    expect(capture.datagrams.every((d) => d.to.port === 4500)).toBe(true);
    expect(cluster.drops({ vni: net.vni })).toEqual({ 'no-outbound-sa': early.length });
    expect(cluster.wireProblems()).toEqual({ nonceReuse: 0, plainOnEncrypted: 0, leaks: 0, unknownSealer: 0 });
  });

  it('a host that is no member (Windows) gets no keys: its frames and the frames toward it are dropped as no-outbound-sa, none cross in plain; a plain network between the same hosts carries them', async () => {
    const cluster = await startCluster({ hosts: 3, os: { h3: 'windows' } });
    const secure = await cluster.network('secure', { subnet: '10.30.0.0/24' });
    const open = await cluster.network('open', { encrypted: false, subnet: '10.31.0.0/24' });
    const s: Endpoint[] = [];
    const o: Endpoint[] = [];
    for (const h of ['h1', 'h2', 'h3']) {
      s.push(await cluster.connect(secure, h, `s-${h}`));
      o.push(await cluster.connect(open, h, `o-${h}`));
    }
    await cluster.settled([...s, ...o]);
    expect(await cluster.activeEverywhere(secure)).toBe(1);
    expect((await cluster.copyHolders(secure, 1)).sort()).toEqual(['h1', 'h2']);

    const [s1, s2, s3] = s as [Endpoint, Endpoint, Endpoint];
    const members = [cluster.send(s1, s2), cluster.send(s2, s1)];
    const refused = [cluster.send(s1, s3), cluster.send(s2, s3), cluster.send(s3, s1), cluster.send(s3, s2)];
    const plain = allPairs(o).map(([a, b]) => cluster.send(a, b));
    await cluster.delivered([...members, ...plain]);
    expect(cluster.notExactlyOnce([...members, ...plain])).toEqual([]);
    expect(refused.filter((m) => cluster.arrivals.has(m))).toEqual([]);
    expect(cluster.drops({ vni: secure.vni })).toEqual({ 'no-outbound-sa': refused.length });
    expect(cluster.drops({ vni: secure.vni, hostId: 'h3' })).toEqual({ 'no-outbound-sa': 2 });
    expect(cluster.drops({ vni: open.vni })).toEqual({});
    // The control: the capture does see plain VXLAN, of the plain network only.
    expect(cluster.wireProblems()).toEqual({ nonceReuse: 0, plainOnEncrypted: 0, leaks: 0, unknownSealer: 0 });
    expect(cluster.wire.counts.sent).toBe(members.length + plain.length);
  });
});
