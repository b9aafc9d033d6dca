// Host indexes come back (docs/etcd.md "Host indexes"), on a real etcd: 20,000 distinct host ids
// register and leave while the key-schedule leader frees the indexes of hosts gone for good; none runs
// out, no two live hosts ever hold one index (so no two live hosts' SPIs can meet: the index is the
// SPI's sender field), the leader's own index is never handed out, and hosts that come back under their
// old id register again. Then the other path: every index claimed, a registration frees them itself.
import { describe, expect, it } from 'vitest';
import { MemoryRotationRequests } from '../../../src/keyrotation/requests.js';
import { HOST_INDEX_MAX } from '../../../src/model/ids.js';
import type { EtcdStore } from '../../../src/store/etcd.js';
import { keys } from '../../../src/store/layout.js';
import type { HostLease } from '../../../src/store/types.js';
import { startHost, startLeader, waitFor } from '../../keyrotation/harness.js';
import { sampleHost } from '../../store/harness.js';
import { sharedEtcd } from './harness.js';

const CHURN = 20_000;
/** Hosts registering at once: each its own registration, then its own leave. */
const CONCURRENCY = 16;
/** Every RETURN_EVERY-th host comes back under its id once it has left. */
const RETURN_EVERY = 500;
/** How often a churner counts the claims in etcd. */
const SAMPLE_EVERY = 250;

/** The host index claims in etcd (hostindex/<n> keys). */
const claims = async (store: EtcdStore): Promise<string[]> =>
  [...(await store.dump()).keys()].filter((k) => k.startsWith(keys.hostIndexPrefix()));

describe('host indexes on a real etcd', () => {
  const etcd = sharedEtcd();

  it(`${CHURN} distinct host ids register and leave: no index runs out, none is held by two live hosts`, async () => {
    const { open } = etcd.fresh();
    const resident = await startHost(open(), 'resident', { ttlSeconds: 10 });
    const { leader, logs } = startLeader(resident, new MemoryRotationRequests());
    const churn = open();
    /** index → the churn host holding it, from its registration until just before it leaves. */
    const live = new Map<number, string>();
    const violations: string[] = [];
    const indexes = new Set<number>();
    let highest = 0;
    let peakClaims = 0;
    let next = 0;
    const returns: string[] = [];
    const cycle = async (id: string): Promise<void> => {
      const lease: HostLease = await churn.registerHost(sampleHost(id), 10);
      const holder = live.get(lease.index);
      if (holder !== undefined) violations.push(`${id} got index ${lease.index} while ${holder} holds it`);
      if (lease.index === resident.lease.index) violations.push(`${id} got the resident's index ${lease.index}`);
      live.set(lease.index, id);
      indexes.add(lease.index);
      highest = Math.max(highest, lease.index);
      // While it is live, etcd's own view: no two live hosts share an index.
      const seen = new Map<number, string>();
      for (const h of (await churn.listHosts()).items) {
        if (seen.has(h.index)) violations.push(`${h.id} and ${seen.get(h.index)} are live with index ${h.index}`);
        seen.set(h.index, h.id);
      }
      live.delete(lease.index);
      await lease.revoke();
    };
    const t0 = performance.now();
    try {
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          for (let i = next++; i < CHURN; i = next++) {
            await cycle(`churn-${i}`);
            if (i % RETURN_EVERY === 0) returns.push(`churn-${i}`);
            if (i % SAMPLE_EVERY === 0) peakClaims = Math.max(peakClaims, (await claims(churn)).length);
          }
        }),
      );
      // Hosts back under their old ids (their indexes may have gone to others meanwhile): they register.
      for (const id of returns) await cycle(id);
      const seconds = (performance.now() - t0) / 1000;
      const freedLogs = logs.filter((l) => l.event === 'host indexes freed');
      const freed = freedLogs.reduce((sum, l) => sum + (l.fields?.['count'] as number), 0);
      console.log(
        `[host churn] ${CHURN} hosts + ${returns.length} returns in ${seconds.toFixed(1)} s ` +
          `(${((CHURN + returns.length) / seconds).toFixed(0)} registrations/s); ${indexes.size} distinct indexes, ` +
          `highest ${highest}; at most ${peakClaims} claims at once; the leader freed ${freed} in ${freedLogs.length} passes`,
      );
      expect(violations).toEqual([]);
      // Racing registrations retry from a random index, so indexes spread over the whole range, but the
      // claims stay far from running out.
      expect(peakClaims).toBeLessThan(HOST_INDEX_MAX / 4);
      // The leader frees as hosts leave: the claims stay near the number of hosts registering at once.
      await waitFor('the last claims freed', async () => (await claims(churn)).length === 1);
      expect(await claims(churn)).toEqual([keys.hostIndex(resident.lease.index)]);
    } finally {
      await leader.stop();
      await resident.stop({ leave: true });
    }
  }, 600_000);

  it('with every index claimed, a registration frees those of hosts gone for good itself (no leader)', async () => {
    const { prefix, open } = etcd.fresh();
    const store = open();
    const live = await store.registerHost(sampleHost('live'), 30);
    // Claims of 16,382 hosts that registered once and left (written as a registration leaves them).
    const raw = store.client.namespace(prefix);
    const ids: number[] = [];
    for (let i = 1; i <= HOST_INDEX_MAX; i++) if (i !== live.index) ids.push(i);
    for (let i = 0; i < ids.length; i += 100) {
      const txn = raw.if(keys.hostIndex(ids[i]!), 'Create', '==', 0);
      await txn.then(...ids.slice(i, i + 100).map((n) => raw.put(keys.hostIndex(n)).value(`gone-${n}`))).commit();
    }
    expect(await claims(store)).toHaveLength(HOST_INDEX_MAX);
    const t0 = performance.now();
    const newcomer = await store.registerHost(sampleHost('newcomer'), 30);
    console.log(
      `[host churn] registration with all ${HOST_INDEX_MAX} claimed: ${(performance.now() - t0).toFixed(0)} ms`,
    );
    expect(newcomer.index).not.toBe(live.index);
    // Every departed host's claim was freed; the live host's stays.
    expect((await claims(store)).sort()).toEqual([keys.hostIndex(live.index), keys.hostIndex(newcomer.index)].sort());
  }, 300_000);
});
