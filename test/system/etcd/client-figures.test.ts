// What an etcd client keeps open comes back down when what it stands for ends (docs/operations.md
// "Footprint"): host leases, election campaigns and watches, as EtcdStore.figures() counts them for
// GET /status. A client that kept every campaign it ever made grew by one per leadership term.
import { describe, expect, it } from 'vitest';
import { keys } from '../../../src/store/layout.js';
import { sampleHost } from '../../store/harness.js';
import { waitUntil } from '../../support/wait.js';
import { sharedEtcd } from './harness.js';

describe('EtcdStore.figures', () => {
  const etcd = sharedEtcd();

  it('a host lease counts while registered, and not once revoked, or lost to its next process', async () => {
    const { open } = etcd.fresh();
    const store = open();
    const lease = await store.registerHost(sampleHost('host-a', { incarnation: 'aaaaaaaaaaaaaaaa' }), 5);
    expect(store.figures().leases).toBe(1);
    await lease.revoke();
    expect(store.figures().leases).toBe(0);
    // Lost: the host's next process replaces the record, revoking this lease (etcd3 reports it at the
    // next keepalive, within a third of the TTL).
    const crashed = await store.registerHost(sampleHost('host-a', { incarnation: 'bbbbbbbbbbbbbbbb' }), 3);
    const next = open();
    await next.registerHost(sampleHost('host-a', { incarnation: 'cccccccccccccccc' }), 3, {
      replaces: 'bbbbbbbbbbbbbbbb',
    });
    await waitUntil('the replaced lease reported lost', () => crashed.lost.aborted, 10_000);
    expect(store.figures().leases).toBe(0);
    expect(next.figures().leases).toBe(1);
  }, 20_000);

  it('ten leadership terms, each resigned, leave no campaign counted; nor does an aborted campaign', async () => {
    const { open } = etcd.fresh();
    const store = open();
    const election = store.election('keyschedule', 3);
    for (let term = 0; term < 10; term++) {
      const leadership = await election.campaign(`term-${term}`);
      expect(store.figures().campaigns).toBe(1);
      await leadership.resign();
      await waitUntil('the resigned campaign forgotten', () => store.figures().campaigns === 0);
    }
    // A campaign waiting behind another's leadership, aborted by its caller.
    const other = open();
    const held = await other.election('keyschedule', 3).campaign('holder');
    const abort = new AbortController();
    const waiting = election.campaign('waiter', { signal: abort.signal }).catch((e: unknown) => e);
    expect(store.figures().campaigns).toBe(1);
    abort.abort(new Error('gave up'));
    expect(await waiting).toMatchObject({ message: 'gave up' });
    await waitUntil('the aborted campaign forgotten', () => store.figures().campaigns === 0);
    await held.resign();
  }, 30_000);

  it('a watch counts while open, and not once cancelled; those inside the shared layout are one etcd watch', async () => {
    const { open } = etcd.fresh();
    const store = open();
    const handler = { onEvents: () => undefined, onResync: () => undefined };
    const from = (await store.revision()) + 1;
    const shared = await Promise.all(
      ['networks/', 'keys/', 'hosts/'].map((prefix) => store.watch(prefix, from, handler)),
    );
    expect(store.figures()).toMatchObject({ watches: 3, etcdWatches: 1 });
    const acks = await store.watch(keys.acksPrefix(), from, handler); // outside it: a watch of its own
    expect(store.figures()).toMatchObject({ watches: 4, etcdWatches: 2 });
    for (const w of [...shared, acks]) await w.cancel();
    expect(store.figures()).toMatchObject({ watches: 0, etcdWatches: 0 });
  });
});
