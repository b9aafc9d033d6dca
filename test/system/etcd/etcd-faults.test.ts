import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { isStoreError } from '../../../src/store/errors.js';
import { EtcdStore } from '../../../src/store/etcd.js';
import { keys } from '../../../src/store/layout.js';
import type { WatchEvent } from '../../../src/store/types.js';
import { startEtcd, type EtcdCluster } from '../support/etcd.js';
import { sampleHost, waitFor } from '../../store/harness.js';

/*
 * Faults that only a real etcd has: members stopping and restarting, quorum, an
 * unreachable cluster. Each describe owns its etcd processes and kills them in afterAll.
 */

const stores: EtcdStore[] = [];
function open(endpoints: string[], callTimeoutMs = 2000): EtcdStore {
  const s = new EtcdStore({ endpoints, callTimeoutMs });
  stores.push(s);
  return s;
}
afterEach(async () => {
  await Promise.all(stores.splice(0).map((s) => s.close()));
});

/** Retries a write while the cluster settles (a leader loss fails the first write; docs/testing.md "The namespace bed"). */
async function retrying<T>(fn: () => Promise<T>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!isStoreError(err, 'VEIL_ERR_STORE_UNAVAILABLE') || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

function collect() {
  const out = {
    events: [] as WatchEvent[],
    resyncs: 0,
    /** 'down' and 'up', in the order the watch reported them. */
    connection: [] as Array<'down' | 'up'>,
    handler: {
      onEvents: (e: WatchEvent[]) => out.events.push(...e),
      onResync: () => {
        out.resyncs++;
      },
      onDisconnected: () => out.connection.push('down'),
      onReconnected: () => out.connection.push('up'),
    } satisfies Parameters<EtcdStore['watch']>[2],
  };
  return out;
}

const net = (name: string, subnet: string) => ({ name, ipam: { subnet } });

describe('etcd store, one member restarting', () => {
  let etcd: EtcdCluster;
  beforeAll(async () => {
    etcd = await startEtcd({ members: 1 });
  });
  afterAll(() => etcd?.stop());

  it('a watch resumes after the etcd member restarts: every event once, in order', async () => {
    const store = open(etcd.endpoints);
    const listing = await store.listNetworks();
    const w = collect();
    const handle = await store.watch(keys.networksPrefix(), listing.revision + 1, w.handler);
    const a = await store.createNetwork(net('a', '10.1.0.0/24'));
    await waitFor('the first event', () => w.events.length === 1);

    await etcd.stopMember(0);
    await expect(store.createNetwork(net('b', '10.2.0.0/24'))).rejects.toSatisfy((e) =>
      isStoreError(e, 'VEIL_ERR_STORE_UNAVAILABLE'),
    );
    await etcd.startMember(0);

    const b = await retrying(() => store.createNetwork(net('b', '10.2.0.0/24')));
    const c = await retrying(() => store.createNetwork(net('c', '10.3.0.0/24')));
    await retrying(() => store.deleteNetwork(a.id));
    await waitFor('all four events', () => w.events.length >= 4, 20_000);
    await new Promise((r) => setTimeout(r, 300)); // nothing duplicated arrives late
    expect(w.events.map((e) => [e.type, e.key])).toEqual([
      ['put', keys.network(a.id)],
      ['put', keys.network(b.id)],
      ['put', keys.network(c.id)],
      ['delete', keys.network(a.id)],
    ]);
    expect(w.resyncs).toBe(0);
    expect(handle.lastRevision).toBe(w.events[3]!.revision);
  });

  it('a watch says when etcd is gone and when it is attached again, with nothing written meanwhile', async () => {
    const store = open(etcd.endpoints);
    const listing = await store.listNetworks();
    const w = collect();
    await store.watch(keys.networksPrefix(), listing.revision + 1, w.handler);
    await etcd.stopMember(0);
    await waitFor('the disconnect', () => w.connection.includes('down'), 20_000);
    await etcd.startMember(0);
    await waitFor('the watch attached again', () => w.connection.at(-1) === 'up', 30_000);
    // Every retry while etcd was down may report again; one 'up' closes them.
    expect(w.connection.filter((c) => c === 'up')).toEqual(['up']);
    expect(w.events).toEqual([]);
  });

  it('keeps the layout under /veil/v1/ by default', async () => {
    const store = open(etcd.endpoints);
    const before = new Set(await store.client.getAll().prefix('/veil/v1/').keys());
    const n = await store.createNetwork(net('layout', '10.8.0.0/24'));
    const e = await store.createEndpoint({ networkId: n.id, name: 'c', hostId: 'h' });
    const raw = (await store.client.getAll().prefix('/veil/v1/').keys()).filter((k) => !before.has(k));
    expect(raw.sort()).toEqual(
      [
        `/veil/v1/networks/${n.id}`,
        '/veil/v1/names/layout',
        `/veil/v1/vnis/${n.vni}`,
        `/veil/v1/netindex/${n.index}`,
        `/veil/v1/endpoints/${n.id}/${e.id}`,
        `/veil/v1/ipam/${n.id}/10.8.0.2`,
      ].sort(),
    );
    await store.deleteEndpoint(n.id, e.id);
    await store.deleteNetwork(n.id);
    expect(new Set(await store.client.getAll().prefix('/veil/v1/').keys())).toEqual(before);
  });

  it('a leader that cannot reach etcd is told to stop within the lease TTL', async () => {
    const store = open(etcd.endpoints, 1000);
    const leader = await store.election('keyschedule', 3).campaign('me');
    let lostAt = 0;
    leader.onLost(() => (lostAt = Date.now()));
    await etcd.stopMember(0);
    const stoppedAt = Date.now();
    try {
      await waitFor('the leadership to be lost', () => leader.lost.aborted, 10_000);
      expect(lostAt - stoppedAt).toBeLessThanOrEqual(3000 + 500); // before another candidate could win (TTL)
      expect(isStoreError(leader.lost.reason, 'VEIL_ERR_NOT_LEADER')).toBe(true);
      await expect(
        store.putEpoch(leader, { networkId: 'n', epoch: 1, state: 'published', publishedAt: 1, copies: 0 }),
      ).rejects.toSatisfy((e) => isStoreError(e, 'VEIL_ERR_NOT_LEADER'));
    } finally {
      await etcd.startMember(0);
    }
  });

  it('a leadership given up locally (not confirmed within 2/3 TTL, etcd3 still keeping its lease alive) frees the election: the next candidate wins within seconds', async () => {
    // Own prefix: the other tests here look at the default layout.
    const prefix = `/t-${randomBytes(4).toString('hex')}/veil/v1/`;
    const [a, b] = [
      new EtcdStore({ endpoints: etcd.endpoints, prefix }),
      new EtcdStore({ endpoints: etcd.endpoints, prefix }),
    ];
    stores.push(a, b);
    const first = await a.election('keyschedule', 3).campaign('first');
    const secondP = b.election('keyschedule', 3).campaign('second');
    await new Promise((r) => setTimeout(r, 300)); // queued behind the first
    // An event-loop stall as the leader sees it: the clock jumps past 2/3 of the TTL since its last
    // confirmation. etcd3's keepalives (timers, not the clock) go on, so etcd keeps the first key.
    const realNow = Date.now.bind(Date);
    const stall = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 5000);
    try {
      await waitFor('the leader to give up', () => first.lost.aborted, 5000);
    } finally {
      stall.mockRestore();
    }
    expect(isStoreError(first.lost.reason, 'VEIL_ERR_NOT_LEADER')).toBe(true);
    expect((first.lost.reason as Error).message).toMatch(/could not confirm leadership/);
    const lostAt = Date.now();
    const second = await Promise.race([secondP, new Promise<null>((r) => setTimeout(() => r(null), 6000))]);
    expect(second, 'the second candidate was never elected: the lost leader still holds the election').not.toBeNull();
    expect(Date.now() - lostAt).toBeLessThan(3000); // not a TTL expiry: the first campaign was revoked
    expect((await b.dump()).size).toBe(1); // only the new leader's key
    await second!.resign();
    await first.resign(); // idempotent after the loss
  });

  it('with etcd stopped, calls fail fast with VEIL_ERR_STORE_UNAVAILABLE and work again when it returns', async () => {
    const store = open(etcd.endpoints, 1000);
    await store.createNetwork(net('before', '10.9.0.0/24'));
    await etcd.stopMember(0);
    const t0 = Date.now();
    const err = await store.listNetworks().catch((e: unknown) => e);
    expect(isStoreError(err, 'VEIL_ERR_STORE_UNAVAILABLE')).toBe(true);
    expect((err as { status: number }).status).toBe(503);
    expect(Date.now() - t0).toBeLessThan(10_000);
    await etcd.startMember(0);
    const listed = await retrying(() => store.listNetworks());
    expect(listed.items.map((n) => n.name)).toContain('before');
  });
});

describe('etcd store, three members', () => {
  let etcd: EtcdCluster;
  beforeAll(async () => {
    etcd = await startEtcd({ members: 3 });
  });
  afterAll(() => etcd?.stop());

  it('with one member stopped, writes continue', async () => {
    const store = open(etcd.endpoints);
    await store.createNetwork(net('before', '10.10.0.0/24'));
    await etcd.stopMember(1, 'SIGKILL');
    try {
      const host = await retrying(() => store.registerHost(sampleHost('h1'), 10));
      const n = await retrying(() => store.createNetwork(net('during', '10.11.0.0/24')));
      const eps = [];
      for (let i = 0; i < 5; i++)
        eps.push(await retrying(() => store.createEndpoint({ networkId: n.id, name: `c${i}`, hostId: 'h1' })));
      expect(new Set(eps.map((e) => e.ipv4)).size).toBe(5);
      const leader = await store.election('keyschedule', 5).campaign('h1');
      await retrying(() =>
        store.putEpoch(leader, { networkId: n.id, epoch: 1, state: 'published', publishedAt: 1, copies: 0 }),
      );
      expect((await store.getEpochs(n.id)).items).toHaveLength(1);
      await leader.resign();
      await host.revoke();
    } finally {
      await etcd.startMember(1);
    }
  });

  it('a watch on a member that goes down resumes when it returns, with the writes made meanwhile through the others', async () => {
    const watcher = open([etcd.endpoints[0]!]);
    const writer = open([etcd.endpoints[1]!, etcd.endpoints[2]!]);
    const listing = await watcher.listEndpoints();
    const w = collect();
    await watcher.watch(keys.endpointsPrefix(), listing.revision + 1, w.handler);
    const n = await writer.createNetwork(net('w3', '10.20.0.0/24'));
    const e1 = await writer.createEndpoint({ networkId: n.id, name: 'e1', hostId: 'h' });
    await waitFor('the first event', () => w.events.length === 1);

    await etcd.stopMember(0);
    const e2 = await retrying(() => writer.createEndpoint({ networkId: n.id, name: 'e2', hostId: 'h' }));
    const e3 = await retrying(() => writer.createEndpoint({ networkId: n.id, name: 'e3', hostId: 'h' }));
    await retrying(() => writer.deleteEndpoint(n.id, e1.id));
    await new Promise((r) => setTimeout(r, 500));
    expect(w.events).toHaveLength(1); // its only member is down: nothing can arrive yet
    await etcd.startMember(0);

    await waitFor('the events written while the member was down', () => w.events.length >= 4, 30_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(w.events.map((e) => [e.type, e.key])).toEqual([
      ['put', keys.endpoint(n.id, e1.id)],
      ['put', keys.endpoint(n.id, e2.id)],
      ['put', keys.endpoint(n.id, e3.id)],
      ['delete', keys.endpoint(n.id, e1.id)],
    ]);
    expect((w.events[3]!.value as { ipv4: string }).ipv4).toBe(e1.ipv4);
    expect(w.resyncs).toBe(0);
  });

  it('after every member was down, calls work again within a second of the members answering, and keep working', async () => {
    const store = open(etcd.endpoints, 1000);
    await retrying(() => store.listNetworks());
    await Promise.all([0, 1, 2].map((m) => etcd.stopMember(m)));
    // Calls all through the outage, as a gateway makes them, until the members answer: every member's
    // breaker opens, and opens again at each trial call that still fails.
    let starting = true;
    const caller = (async () => {
      while (starting) {
        await store.listNetworks().catch(() => undefined);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    await new Promise((r) => setTimeout(r, 2_000));
    await Promise.all([0, 1, 2].map((m) => etcd.startMember(m)));
    starting = false;
    await caller;
    const back = Date.now();
    await retrying(async () => {
      await store.listNetworks();
    });
    // etcd3's default breaker skipped a failed member for 5 s: up to 5 s of refusals with etcd healthy.
    const waited = Date.now() - back;
    console.log(`store calls refused for ${waited} ms after every member answered`);
    expect(waited).toBeLessThan(2_000);
    for (let i = 0; i < 20; i++) await store.listNetworks();
  });
});
