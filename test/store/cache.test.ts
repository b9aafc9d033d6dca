// CachedStore (docs/api.md "Reads"): reads from a watched replica, the store's answers, and read-your-writes.
import { afterEach, describe, expect, it } from 'vitest';
import { CachedStore, READ_YOUR_WRITES_WAIT_MS } from '../../src/store/cache.js';
import { isStoreError } from '../../src/store/errors.js';
import { MemoryBackend, type MemoryStore } from '../../src/store/memory.js';
import type { Store } from '../../src/store/types.js';
import { sampleHost, waitFor } from './harness.js';

const READS = ['listNetworks', 'getNetwork', 'listEndpoints', 'listHosts', 'getEpochs'] as const;

/** The store under the cache, counting the reads that reach it. */
function counted(store: MemoryStore): { store: Store; reads: () => number } {
  let n = 0;
  const proxy = new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        if ((READS as readonly string[]).includes(prop as string)) n++;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store: proxy, reads: () => n };
}

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function setup(watchDelayMs = 0) {
  const backend = new MemoryBackend();
  const other = backend.client();
  const mine = counted(backend.client({ watchDelayMs }));
  const cache = new CachedStore(mine.store);
  closers.push(
    () => other.close(),
    () => cache.close(),
  );
  await other.createNetwork({ name: 'before', ipam: { subnet: '10.30.0.0/24' } });
  await cache.start();
  return { other, cache, storeReads: mine.reads };
}

describe('CachedStore', () => {
  it('answers reads from memory, as the store would, and follows other clients through the watch', async () => {
    const { other, cache, storeReads } = await setup();
    const base = storeReads(); // the initial load
    expect((await cache.listNetworks()).items.map((n) => n.name)).toEqual(['before']);
    const n = await other.createNetwork({ name: 'later', encrypted: true, ipam: { subnet: '10.31.0.0/24' } });
    await waitFor('the watch to bring it', async () => (await cache.listNetworks()).items.length === 2);
    expect(await cache.getNetwork('later')).toEqual(await other.getNetwork('later'));
    expect(await cache.getNetwork(n.id)).toEqual(n);
    // A miss is asked of the store (another host may have created it a moment ago): its answer, its error.
    const missesBefore = storeReads();
    const err = await cache.getNetwork('nope').catch((e: unknown) => e);
    expect(storeReads()).toBe(missesBefore + 1);
    expect(isStoreError(err, 'VEIL_ERR_NOT_FOUND')).toBe(true);
    const theirs = await other.getNetwork('nope').catch((e: unknown) => e);
    expect((err as Error).message).toBe((theirs as Error).message);
    const ep = await other.createEndpoint({ networkId: n.id, name: 'c1', hostId: 'h1' });
    await waitFor('the endpoint', async () => (await cache.listEndpoints(n.id)).items.length === 1);
    expect((await cache.listEndpoints()).items).toEqual((await other.listEndpoints()).items);
    expect((await cache.listEndpoints(n.id)).items).toEqual([ep]);
    await other.registerHost(sampleHost('h1'), 30);
    await waitFor('the host', async () => (await cache.listHosts()).items.length === 1);
    expect((await cache.listHosts()).items).toEqual((await other.listHosts()).items);
    const leader = await other.election('keyschedule', 5).campaign('h1');
    const epoch = { networkId: n.id, epoch: 1, state: 'published' as const, publishedAt: 1, copies: 0 };
    await other.putEpoch(leader, epoch);
    await waitFor('the epoch', async () => (await cache.getEpochs(n.id)).items.length === 1);
    expect((await cache.getEpochs(n.id)).items).toEqual((await other.getEpochs(n.id)).items);
    await other.deleteEndpoint(n.id, ep.id);
    await waitFor('the endpoint gone', async () => (await cache.listEndpoints(n.id)).items.length === 0);
    // None of the other reads reached the store.
    expect(storeReads()).toBe(base + 1);
  });

  it('read-your-writes: a write through the cache is in the next read', async () => {
    const { cache, storeReads } = await setup();
    const base = storeReads();
    const n = await cache.createNetwork({ name: 'mine', ipam: { subnet: '10.32.0.0/24' } });
    expect((await cache.listNetworks()).items.map((x) => x.name).sort()).toEqual(['before', 'mine']);
    const ep = await cache.createEndpoint({ networkId: n.id, name: 'c1', hostId: 'h1' });
    expect((await cache.listEndpoints(n.id)).items).toEqual([ep]);
    const updated = await cache.updateEndpoint(n.id, ep.id, { aliases: ['web'] });
    expect((await cache.listEndpoints(n.id)).items).toEqual([updated]);
    await cache.deleteEndpoint(n.id, ep.id);
    expect((await cache.listEndpoints(n.id)).items).toEqual([]);
    await cache.deleteNetwork('mine');
    expect((await cache.listNetworks()).items.map((x) => x.name).sort()).toEqual(['before']);
    expect(storeReads()).toBe(base);
  });

  it('when the watch lags past the wait, reads go to the store until it has caught up', async () => {
    const { other, cache, storeReads } = await setup(READ_YOUR_WRITES_WAIT_MS + 1_000);
    // Another host's network, asked for by name before this watch brings it: found at once (a miss asks the store).
    const theirs = await other.createNetwork({ name: 'elsewhere', ipam: { subnet: '10.34.0.0/24' } });
    expect(await cache.getNetwork('elsewhere')).toEqual(theirs);
    const t0 = Date.now();
    await cache.createNetwork({ name: 'slow', ipam: { subnet: '10.33.0.0/24' } });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(READ_YOUR_WRITES_WAIT_MS - 50);
    const before = storeReads();
    // Still the write is in the next read: from the store, since the replica has not shown it yet.
    expect((await cache.listNetworks()).items.map((x) => x.name).sort()).toEqual(['before', 'elsewhere', 'slow']);
    expect(storeReads()).toBe(before + 1);
    await waitFor('the replica to catch up', async () => {
      const n = storeReads();
      await cache.listNetworks();
      return storeReads() === n;
    });
    expect((await cache.listNetworks()).items.map((x) => x.name).sort()).toEqual(['before', 'elsewhere', 'slow']);
  });
});
