// Epoch races across in-process gateways (docs/keys.md "Rotation", "Leader"): concurrent requests,
// a leader that goes between publish and activate, restarts and lost leases mid-rotation, a network
// deleted mid-rotation. Once things settle every frame arrives, and no GCM nonce repeats on the wire.
import { describe, expect, it } from 'vitest';
import { until, useClusters, type Cluster, type Endpoint } from './harness.js';

const startCluster = useClusters();

const allPairs = (eps: readonly Endpoint[]) =>
  eps.flatMap((a) => eps.filter((b) => b !== a).map((b) => [a, b] as const));

const CLEAN_WIRE = { nonceReuse: 0, plainOnEncrypted: 0, leaks: 0, unknownSealer: 0 };

async function threeHostsOnOneNetwork(cluster: Cluster) {
  const net = await cluster.network('secure');
  const eps: Endpoint[] = [];
  for (const h of ['h1', 'h2', 'h3']) eps.push(await cluster.connect(net, h, `c-${h}`));
  await cluster.settled(eps);
  await cluster.activeEverywhere(net);
  return { net, eps };
}

/** Every ordered pair sends one frame; each must arrive exactly once. */
async function everyPairDelivers(cluster: Cluster, eps: readonly Endpoint[]): Promise<void> {
  const markers = allPairs(eps).map(([a, b]) => cluster.send(a, b));
  await cluster.delivered(markers);
  expect(cluster.notExactlyOnce(markers)).toEqual([]);
}

describe('epoch races', () => {
  it('two hosts ask for a rotation at the same moment, four times under traffic: one new epoch each time, nothing lost', async () => {
    const cluster = await startCluster({ hosts: 3 });
    const { net, eps } = await threeHostsOnOneNetwork(cluster);
    const first = await cluster.currentEpoch(net);
    const traffic = cluster.traffic(eps);
    for (let round = 1; round <= 4; round++) {
      const asked = await Promise.all([cluster.rotate(net, 'h1'), cluster.rotate(net, 'h3')]);
      expect(asked.map((r) => r.afterEpoch)).toEqual([first + round - 1, first + round - 1]);
      await cluster.activeEverywhere(net, first + round);
      await cluster.endGrace();
    }
    const markers = traffic.stop();
    await cluster.delivered(markers);
    // Once the older epochs are gone, nothing holds a second epoch for the same requests back: none comes.
    await until('only the current epoch and its standby to be left', () => cluster.onlyCurrentAndStandby(net));
    expect(await cluster.currentEpoch(net)).toBe(first + 4);
    expect(cluster.notExactlyOnce(markers)).toEqual([]);
    expect(cluster.drops()).toEqual({});
    expect(cluster.wireProblems()).toEqual(CLEAN_WIRE);
  });

  it('the leader stops between publish and activate: another host activates the epoch, the others lose nothing meanwhile, and the old leader rejoins', async () => {
    const cluster = await startCluster({ hosts: 3 });
    const { net, eps } = await threeHostsOnOneNetwork(cluster);
    const [, c2, c3] = eps as [Endpoint, Endpoint, Endpoint];
    expect(cluster.leader()?.id).toBe('h1');
    const traffic = cluster.traffic([c2, c3]);

    // The leader published the next epoch (the standby) and goes before it activates it.
    const current = await cluster.currentEpoch(net);
    await until('the standby to be published', async () => (await cluster.newestEpoch(net)) > current);
    const epoch = await cluster.newestEpoch(net);
    expect((await cluster.epochs(net)).find((r) => r.epoch === epoch)?.state).toBe('published');
    // Its host stays a member: had it left, the standby it holds a copy of would be replaced instead.
    await cluster.host('h1').node.leader.stop();
    await cluster.rotate(net, 'h2');
    await cluster.activeEverywhere(net, epoch);
    const successor = cluster.leader()!;
    expect(['h2', 'h3']).toContain(successor.id);
    expect(successor.logs.some((l) => l.includes('epoch activated') && l.includes(`"epoch":${epoch}`))).toBe(true);

    const markers = traffic.stop();
    await cluster.delivered(markers);
    expect(cluster.notExactlyOnce(markers)).toEqual([]);
    expect(cluster.drops()).toEqual({});

    await cluster.stop('h1');
    await cluster.start('h1');
    await cluster.settled(eps);
    await cluster.activeEverywhere(net, epoch);
    await everyPairDelivers(cluster, eps);
    expect(cluster.wireProblems()).toEqual(CLEAN_WIRE);
  });

  it('a host crashes while an epoch is published and comes back with a new incarnation: the epoch activates, the others lose nothing, and every pair carries frames under new keys', async () => {
    const cluster = await startCluster({ hosts: 3 });
    const { net, eps } = await threeHostsOnOneNetwork(cluster);
    const [c1, , c3] = eps as [Endpoint, Endpoint, Endpoint];
    const traffic = cluster.traffic([c1, c3]);
    const before = cluster.host('h2').incarnation;

    const current = await cluster.currentEpoch(net);
    await until('the standby to be published', async () => (await cluster.newestEpoch(net)) > current);
    const standby = await cluster.newestEpoch(net);
    // Its lease outlives it by the TTL; the new process starts once it has expired.
    await cluster.kill('h2');
    await until('the dead host to drop out', async () =>
      (await cluster.admin.listHosts()).items.every((h) => h.id !== 'h2'),
    );
    await cluster.start('h2');
    expect(cluster.host('h2').incarnation).not.toBe(before);
    await cluster.settled(eps);
    await cluster.rotate(net, 'h3');
    // The standby activates; or its replacement, when the leader saw the host gone before it came
    // back (a host that left must not get the next epoch: docs/keys.md "Rotation").
    const epoch = await cluster.nextEpoch(net, current);
    expect(epoch).toBeGreaterThanOrEqual(standby);

    const markers = traffic.stop();
    await cluster.delivered(markers);
    expect(cluster.notExactlyOnce(markers)).toEqual([]);
    expect(cluster.drops({ hostId: 'h1', vni: net.vni })).toEqual({});
    expect(cluster.drops({ hostId: 'h3', vni: net.vni })).toEqual({});
    await everyPairDelivers(cluster, eps);
    expect(cluster.wireProblems()).toEqual(CLEAN_WIRE);
  });

  it('a host cut off from etcd past its lease registers again with the same incarnation: its peers re-add it under the same keys and go on with the same sequence numbers', async () => {
    const cluster = await startCluster({ hosts: 3 });
    const { net, eps } = await threeHostsOnOneNetwork(cluster);
    await everyPairDelivers(cluster, eps);
    const h2 = cluster.host('h2');
    const incarnation = h2.incarnation;
    const h1 = cluster.host('h1');
    const from = h1.logs.length;
    const logged = (event: string) => h1.logs.slice(from).some((l) => l.includes(event) && l.includes('"peer":"h2"'));

    cluster.partition('h2');
    await until('h1 to drop h2 once its lease expired', () => logged('peer removed'));
    cluster.partition('h2', false);
    await until('h1 to add h2 again', () => logged('peer added'), 15_000);
    await cluster.settled(eps);
    expect(h2.incarnation).toBe(incarnation);
    await cluster.activeEverywhere(net);

    const sealedBefore = cluster.sealed.length;
    await everyPairDelivers(cluster, eps);
    await everyPairDelivers(cluster, eps);
    expect(cluster.drops()).toEqual({});
    expect(cluster.wireProblems()).toEqual(CLEAN_WIRE);
    // h1 seals toward h2 under the key it used before, and its sequence went on.
    const h1ToH2 = cluster.sealed.filter((s) => s.from === 'h1' && s.to === 'h2');
    expect(new Set(h1ToH2.map((s) => s.key)).size).toBe(1);
    const ivs = h1ToH2.map((s) => BigInt(`0x${s.iv}`));
    expect(ivs).toEqual([...ivs].sort((a, b) => (a < b ? -1 : 1)));
    expect(ivs.at(-1)).toBe(BigInt(ivs.length));
    expect(cluster.sealed.length - sealedBefore).toBe(12);
  });

  it('a network deleted while an epoch is published goes from every host; a new one on the same VNI and network index carries frames under its own keys', async () => {
    const cluster = await startCluster({ hosts: 3 });
    const { net, eps } = await threeHostsOnOneNetwork(cluster);
    await everyPairDelivers(cluster, eps);
    for (const ep of eps) await cluster.disconnect(ep);

    const published = cluster.nextEpochIn(net, 'published');
    await cluster.rotate(net, 'h2');
    await published;
    await cluster.deleteNetwork(net);
    const hosts = cluster.running();
    const gone = () =>
      hosts.every(
        (h) =>
          !h.node.gateway.hasNetwork(net.vni) &&
          !h.node.installer.status().networks.some((n) => n.networkId === net.id) &&
          !h.node.leader.status().networks.some((n) => n.networkId === net.id),
      );
    await until('the network to be gone from every host', gone);

    const again = await cluster.network('secure-again');
    expect([again.vni, again.index]).toEqual([net.vni, net.index]);
    const eps2: Endpoint[] = [];
    for (const h of ['h1', 'h2', 'h3']) eps2.push(await cluster.connect(again, h, `d-${h}`));
    await cluster.settled(eps2);
    expect(await cluster.activeEverywhere(again)).toBe(1);
    await everyPairDelivers(cluster, eps2);
    expect(cluster.drops()).toEqual({});
    expect(cluster.wireProblems()).toEqual(CLEAN_WIRE);
    // The same SPIs as the deleted network's epoch 1, under other keys.
    const spis = (from: number, to: number) =>
      new Set(cluster.sealed.slice(from, to).map((s) => `${s.from}>${s.to}/${s.spi}/${s.key}`));
    const old = spis(0, 6);
    const fresh = spis(cluster.sealed.length - 6, cluster.sealed.length);
    expect([...fresh].filter((k) => old.has(k))).toEqual([]);
    expect(new Set([...fresh].map((k) => k.split('/')[1]))).toEqual(new Set([...old].map((k) => k.split('/')[1])));
  });
});
