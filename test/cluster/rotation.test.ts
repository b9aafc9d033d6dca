// Forced rotations under traffic between three in-process gateways (docs/keys.md "Rotation"):
// make-before-break holds end to end, every frame arrives exactly once, no GCM nonce repeats.
import { describe, expect, it } from 'vitest';
import { until, useClusters, type Endpoint } from './harness.js';

const startCluster = useClusters();

describe('rotation under traffic', () => {
  it('ten forced rotations, asked from every host in turn, while frames flow both ways between three hosts: each frame arrives once, nothing is dropped', async () => {
    const cluster = await startCluster({ hosts: 3 });
    const net = await cluster.network('secure');
    const eps = [];
    for (const h of ['h1', 'h2', 'h3']) eps.push(await cluster.connect(net, h, `c-${h}`));
    await cluster.settled(eps);
    const first = await cluster.activeEverywhere(net);

    const traffic = cluster.traffic(eps);
    const directions = ['h1', 'h2', 'h3'].flatMap((a) => ['h1', 'h2', 'h3'].filter((b) => b !== a).map((b) => [a, b]));
    const sealedUnder = (epoch: number) =>
      directions.every(([a, b]) => cluster.sealed.some((s) => s.from === a && s.to === b && s.epoch === epoch));
    const reached: number[] = [];
    for (let i = 0; i < 10; i++) {
      const epoch = await cluster.rotateAndWait(net, `h${(i % 3) + 1}`);
      reached.push(epoch);
      // The traffic crosses every epoch in every direction before the next rotation is asked.
      await until(`traffic under epoch ${epoch} in every direction`, () => sealedUnder(epoch));
    }
    const markers = traffic.stop();
    await cluster.delivered(markers);

    expect(reached).toEqual(Array.from({ length: 10 }, (_, i) => first + i + 1));
    expect(cluster.notExactlyOnce(markers)).toEqual([]);
    expect(cluster.strays).toEqual([]);
    expect(cluster.drops()).toEqual({});
    expect(cluster.wireProblems()).toEqual({ nonceReuse: 0, plainOnEncrypted: 0, leaks: 0, unknownSealer: 0 });
    // Only forced rotations, each activated once every member acked.
    const leader = cluster.leader()!;
    expect(leader.node.leader.status().networks[0]).toMatchObject({ ackTimeouts: 0, problem: null });
  });
});

describe('rotation on a packet budget', () => {
  it('outbound SAs that used half their budget ask for the next epoch: three rotations under traffic, none exhausted, nothing lost', async () => {
    const cluster = await startCluster({ hosts: 3, sequenceBudget: 200, budgetCheckMs: 20 });
    const net = await cluster.network('secure');
    const eps = [];
    for (const h of ['h1', 'h2', 'h3']) eps.push(await cluster.connect(net, h, `c-${h}`));
    await cluster.settled(eps);
    const first = await cluster.activeEverywhere(net);

    const traffic = cluster.traffic(eps);
    let newest = first;
    while (newest < first + 3) newest = await cluster.nextEpoch(net, newest);
    const markers = traffic.stop();
    await cluster.delivered(markers);

    expect(cluster.notExactlyOnce(markers)).toEqual([]);
    expect(cluster.drops()).toEqual({});
    expect(cluster.wireProblems()).toEqual({ nonceReuse: 0, plainOnEncrypted: 0, leaks: 0, unknownSealer: 0 });
    // No key sealed more than its budget; the requests came from the budget check.
    const perKey = new Map<string, number>();
    for (const s of cluster.sealed)
      perKey.set(`${s.from}>${s.to}/${s.key}`, (perKey.get(`${s.from}>${s.to}/${s.key}`) ?? 0) + 1);
    expect(Math.max(...perKey.values())).toBeLessThanOrEqual(200);
    const asked = cluster.running().flatMap((h) => h.logs.filter((l) => l.includes('used half its sequence budget')));
    expect(asked.length).toBeGreaterThanOrEqual(3);
  });
  it('a host whose SA runs out while the next epoch is already published asks for an epoch newer than its SA, not newer than that one', async () => {
    const cluster = await startCluster({ hosts: 3, sequenceBudget: 200, budgetCheckMs: 10 });
    const net = await cluster.network('secure');
    const eps: Endpoint[] = [];
    for (const h of ['h1', 'h2', 'h3']) eps.push(await cluster.connect(net, h, `c-${h}`));
    const [c1, c2] = eps as [Endpoint, Endpoint];
    await cluster.settled(eps);
    expect(await cluster.activeEverywhere(net)).toBe(1);
    await until('the standby, epoch 2, to be published', async () => (await cluster.newestEpoch(net)) === 2);
    const request = () => cluster.admin.getRotationRequest(net.id);

    for (let i = 0; i < 100; i++) cluster.send(c1, c2);
    await until('h1 to ask', async () => (await request())?.by === 'sequence-budget:h1');
    expect(await request()).toMatchObject({ afterEpoch: 1 });
    expect(await cluster.nextEpoch(net, 1)).toBe(2);
    // One rotation: the request is satisfied by epoch 2, and epoch 3 waits as the next standby.
    await until('only the current epoch and its standby to be left', () => cluster.onlyCurrentAndStandby(net));
    expect([await cluster.currentEpoch(net), await cluster.newestEpoch(net)]).toEqual([2, 3]);
  });
});
