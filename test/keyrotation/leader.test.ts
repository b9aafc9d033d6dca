import { afterEach, describe, expect, it } from 'vitest';
import { hexToBytes } from '../../src/crypto/bytes.js';
import { unwrapSecret } from '../../src/crypto/keywrap.js';
import { MemoryRotationRequests, requestRotation } from '../../src/keyrotation/requests.js';
import { unwrapForSelf } from '../../src/keyrotation/wrapping.js';
import { isStoreError, StoreError } from '../../src/store/errors.js';
import { keys, parseKey } from '../../src/store/layout.js';
import { MemoryBackend, type MemoryStore } from '../../src/store/memory.js';
import type { KeyEpochRecord, Leadership, NetworkRecord, Store, WrappedCopies } from '../../src/store/types.js';
import { sampleHost } from '../store/harness.js';
import { ManualClock, secretSpellings, settle, startHost, startLeader, waitFor, type SimHost } from './harness.js';

/*
 * The leader and three simulated hosts on the in-memory store (one MemoryBackend, one
 * client per host, as in production one etcd client per process).
 */

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function bed(hostIds = ['h1', 'h2', 'h3']) {
  const backend = new MemoryBackend();
  const client = (): MemoryStore => {
    const c = backend.client();
    cleanups.push(() => c.close());
    return c;
  };
  const admin = client();
  const network = await admin.createNetwork({ name: 'secure', encrypted: true, ipam: { subnet: '10.77.0.0/24' } });
  const hosts: SimHost[] = [];
  for (const id of hostIds) hosts.push(await addHost(id));
  async function addHost(id: string, os = 'linux'): Promise<SimHost> {
    const h = await startHost(client(), id, { os });
    cleanups.push(() => h.stop());
    return h;
  }
  const requests = new MemoryRotationRequests();
  return { backend, admin, network, hosts, requests, addHost, client };
}

const epochsOf = async (store: Store, n: NetworkRecord): Promise<KeyEpochRecord[]> =>
  (await store.getEpochs(n.id)).items;
const statesOf = async (store: Store, n: NetworkRecord): Promise<string[]> =>
  (await epochsOf(store, n)).map((r) => `${r.epoch}:${r.state}`);
/** host id → its wrapped copy of the epoch's secret, as etcd holds them. */
async function copiesOf(store: Store, n: NetworkRecord, epoch: number): Promise<Record<string, string>> {
  const held = (await store.listCopies(n.id)).items.filter((c) => c.epoch === epoch);
  return Object.fromEntries(
    await Promise.all(held.map(async (c) => [c.hostId, await store.getCopy(n.id, epoch, c.hostId)])),
  );
}
const holdersOf = async (store: Store, n: NetworkRecord, epoch: number): Promise<string[]> =>
  Object.keys(await copiesOf(store, n, epoch)).sort();
const outboundEverywhere = (hosts: SimHost[], n: NetworkRecord, epoch: number): boolean =>
  hosts.every((h) => h.sink.outbound.get(n.id) === epoch);

/** The store, recording the name of every method called on it (into `calls`, when it is called). */
function countingCalls(store: Store, calls: string[] = []): { store: Store; calls: string[] } {
  const counting = new Proxy(store, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        calls.push(String(prop));
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store: counting, calls };
}

describe('KeyScheduleLeader with three hosts (memory store)', () => {
  it('first epoch, then a forced rotation from a non-leader host: publish → all ack → activate → retire → delete', async () => {
    const { admin, network: n, hosts, requests } = await bed();
    const [h1, h2, h3] = hosts as [SimHost, SimHost, SimHost];
    const { leader, logs } = startLeader(h1, requests);
    cleanups.push(() => leader.stop());

    await waitFor('epoch 1 active on every host', () => outboundEverywhere(hosts, n, 1));
    expect(leader.isLeader).toBe(true);
    // Then the next epoch waits published and installed everywhere: the standby.
    await waitFor('standby 2 acked by every host', async () => (await admin.listAcks(n.id, 2)).items.length === 3);
    expect(await statesOf(admin, n)).toEqual(['1:active', '2:published']);

    const req = await requestRotation({ store: h3.store, requests }, n.id, 'h3');
    expect(req).toMatchObject({ networkId: n.id, afterEpoch: 1, by: 'h3' });
    await waitFor('epoch 2 active on every host', () => outboundEverywhere(hosts, n, 2));
    await waitFor(
      'epoch 1 deleted, 3 the standby',
      async () => (await statesOf(admin, n)).join() === '2:active,3:published',
    );

    // Each host: inbound 2 before its ack, outbound 2 only after, 1 retired last (make before break).
    for (const h of hosts)
      expect(h.sink.trace(n.id).filter((call) => !call.endsWith(' 3'))).toEqual([
        'install 1',
        'ack 1',
        'activate 1',
        'install 2',
        'ack 2',
        'activate 2',
        'retire 1',
      ]);
    // The leader: every member acked before activation, no timeout; the steps in order.
    const leaderSteps = logs
      .filter((l) => l.fields?.network === n.id && /^epoch (published|activated|retired|deleted)/.test(l.event))
      .map((l) => `${l.event.split(' ')[1]} ${l.fields?.epoch}`);
    expect(leaderSteps.filter((step) => !step.endsWith(' 3'))).toEqual([
      'published 1',
      'activated 1',
      'published 2',
      'activated 2',
      'retired 1',
      'deleted 1',
    ]);
    expect(leaderSteps.indexOf('published 3')).toBeGreaterThan(leaderSteps.indexOf('activated 2'));
    expect(logs.find((l) => l.event === 'epoch published' && l.fields?.epoch === 2)?.fields).toMatchObject({
      because: 'standby',
      members: ['h1', 'h2', 'h3'],
    });
    expect(logs.find((l) => l.event === 'epoch activated' && l.fields?.epoch === 2)?.fields).toMatchObject({
      rotation: 'requested',
    });
    expect(leader.status().networks[0]).toMatchObject({ networkId: n.id, ackTimeouts: 0, problem: null });

    // One secret per epoch, the same on every host, new at each rotation.
    const s1 = h1.sink.secret(n.id, 1)!;
    const s2 = h1.sink.secret(n.id, 2)!;
    expect(s2).not.toBe(s1);
    for (const h of [h2, h3]) expect([h.sink.secret(n.id, 1), h.sink.secret(n.id, 2)]).toEqual([s1, s2]);

    // etcd (here: its stand-in) and every log hold no usable key.
    const dump = await admin.dump();
    const everything = [...dump].join('\n') + JSON.stringify(logs) + JSON.stringify(hosts.map((h) => h.logs));
    for (const s of [s1, s2]) for (const spelled of secretSpellings(s)) expect(everything).not.toContain(spelled);
    expect([...dump.keys()].some((k) => k.startsWith(keys.acksPrefix(n.id, 1)))).toBe(false); // acks went with the epoch
  });

  it('a host joining later gets the live epochs rewrapped; a host that left gets none for new epochs', async () => {
    const { admin, network: n, hosts, requests, addHost } = await bed();
    const [h1, , h3] = hosts as [SimHost, SimHost, SimHost];
    const { leader, logs } = startLeader(h1, requests);
    cleanups.push(() => leader.stop());
    await waitFor('epoch 1 active', () => outboundEverywhere(hosts, n, 1));

    const h4 = await addHost('h4');
    await waitFor('h4 seals with epoch 1', () => h4.sink.outbound.get(n.id) === 1);
    expect(h4.sink.secret(n.id, 1)).toBe(h1.sink.secret(n.id, 1));
    expect(logs.find((l) => l.event.startsWith('epoch rewrapped'))?.fields).toMatchObject({ epoch: 1, hosts: ['h4'] });
    expect(await holdersOf(admin, n, 1)).toEqual(['h1', 'h2', 'h3', 'h4']);
    expect((await epochsOf(admin, n))[0]!.copies).toBe(4); // the count changed with the rewrap
    await waitFor('h4 holds standby 2 too', async () => (await holdersOf(admin, n, 2)).length === 4);

    // h3 leaves holding a copy of the standby: that epoch is replaced, never activated.
    await h3.stop({ leave: true });
    await requestRotation({ store: admin, requests }, n.id, 'api:test');
    const live = [h1, hosts[1]!, h4];
    await waitFor('epoch 3 active on the remaining hosts', () => outboundEverywhere(live, n, 3));
    expect(logs.find((l) => l.event === 'epoch retired' && l.fields?.epoch === 2)?.fields).toMatchObject({
      because: 'member-left',
    });
    expect(live.map((h) => h.sink.trace(n.id).includes('activate 2'))).toEqual([false, false, false]);
    const e3 = (await epochsOf(admin, n)).find((r) => r.epoch === 3)!;
    expect(await holdersOf(admin, n, 3)).toEqual(['h1', 'h2', 'h4']);
    expect(unwrapForSelf(await admin.getCopy(n.id, 3, 'h3'), e3, h3.identity)).toEqual({
      ok: false,
      why: 'not-member',
    });
    expect(h3.sink.secret(n.id, 3)).toBeUndefined();
  });

  it("a non-member cannot unwrap: a Windows host gets no copy, and nobody opens another host's copy", async () => {
    const { admin, network: n, hosts, requests, addHost } = await bed();
    const [h1, h2] = hosts as [SimHost, SimHost];
    const win = await addHost('win1', 'windows');
    const { leader } = startLeader(h1, requests);
    cleanups.push(() => leader.stop());
    await waitFor('epoch 1 active', () => outboundEverywhere(hosts, n, 1));
    await waitFor('standby 2 acked', async () => (await admin.listAcks(n.id, 2)).items.length === 3);
    await win.installer.idle();

    const e1 = (await epochsOf(admin, n))[0]!;
    const copies = await copiesOf(admin, n, 1);
    expect(Object.keys(copies).sort()).toEqual(['h1', 'h2', 'h3']);
    expect(win.sink.calls).toEqual([]);
    expect(win.installer.status().counters.notMember).toBe(2); // epoch 1 and the standby
    expect(win.installer.status().networks[0]!.epochs[0]).toMatchObject({
      epoch: 1,
      installed: false,
      problem: 'not-member',
    });

    // h1's copy, tried with the Windows host's key, or with h2's key under either name: nothing.
    const h1copy = Buffer.from(copies.h1!, 'base64');
    for (const [who, key] of [
      ['win1', win.identity.privateKey],
      ['h1', win.identity.privateKey],
      ['h2', h2.identity.privateKey],
      ['h1', h2.identity.privateKey],
    ] as const) {
      expect(unwrapSecret(h1copy, key, { networkId: n.id, epoch: 1, hostId: who })).toBeNull();
    }
    // A copy moved under another host's name does not open for that host either (AAD binds the host).
    expect(unwrapForSelf(copies.h1!, e1, h2.identity)).toEqual({
      ok: false,
      why: 'key-unavailable',
    });
  });

  it('leader fencing: leadership lost between publish and activate → a second leader takes over and completes; one epoch sequence', async () => {
    const { backend, admin, network: n, hosts, requests } = await bed();
    const [h1, h2, h3] = hosts as [SimHost, SimHost, SimHost];
    // Every epoch record ever written, from the store's own history.
    const written: KeyEpochRecord[] = [];
    const watch = await admin.watch(keys.keysPrefix(), 1, {
      onEvents: (ev) => ev.forEach((e) => e.type === 'put' && written.push(e.value as KeyEpochRecord)),
      onResync: () => undefined,
    });
    cleanups.push(() => watch.cancel());
    // And every copy of h1's: one per epoch, or two leaders drew two secrets for one number.
    const h1Copies: Array<{ epoch: number; wrapped: string }> = [];
    const copyWatch = await admin.watch(keys.copiesPrefix(), 1, {
      onEvents: (ev) =>
        ev.forEach((e) => {
          const k = parseKey(e.key);
          if (e.type === 'put' && k?.kind === 'copy' && k.hostId === 'h1')
            h1Copies.push({ epoch: k.epoch, wrapped: (e.value as { wrapped: string }).wrapped });
        }),
      onResync: () => undefined,
    });
    cleanups.push(() => copyWatch.cancel());

    // The first leader's store records its fenced writes and the Leadership it writes under.
    const firstWrites: string[] = [];
    let firstLeadership: Leadership | null = null;
    const recording = new Proxy(h1.store, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target) as unknown;
        if (prop !== 'putEpoch' && prop !== 'deleteEpoch') return typeof v === 'function' ? v.bind(target) : v;
        return async (l: Leadership, ...rest: unknown[]) => {
          firstLeadership = l;
          firstWrites.push(
            prop === 'putEpoch'
              ? `put ${(rest[0] as KeyEpochRecord).epoch}:${(rest[0] as KeyEpochRecord).state}`
              : `delete ${String(rest[1])}`,
          );
          return (v as (...a: unknown[]) => Promise<void>).call(target, l, ...rest);
        };
      },
    });
    // h3 cannot install (so cannot ack) epoch 2 until released.
    let release!: () => void;
    h3.sink.gate = { from: 2, open: new Promise((r) => (release = r)) };
    cleanups.push(async () => release()); // never leave h3's installer blocked
    const first = startLeader({ ...h1, store: recording }, requests);
    cleanups.push(() => first.leader.stop());
    await waitFor('epoch 1 active', () => outboundEverywhere(hosts, n, 1));
    const second = startLeader(h2, requests);
    cleanups.push(() => second.leader.stop());
    await settle();
    expect([first.leader.isLeader, second.leader.isLeader]).toEqual([true, false]);

    await waitFor('h1 and h2 acked epoch 2', async () => (await admin.listAcks(n.id, 2)).items.length === 2);
    await requestRotation({ store: h3.store, requests }, n.id, 'h3');
    await settle();
    expect(await statesOf(admin, n)).toEqual(['1:active', '2:published']);
    const published2 = (await epochsOf(admin, n)).find((r) => r.epoch === 2)!;
    const published2Copies = await copiesOf(admin, n, 2);

    // The first leader's election lease is lost (as when its etcd session expires).
    const leaderKey = backend.range(keys.electionPrefix()).sort(([, a], [, b]) => a.create - b.create)[0]!;
    backend.revokeLease(leaderKey[1].lease!);
    await waitFor('the second leader takes over', () => second.leader.isLeader);
    expect(first.leader.isLeader).toBe(false);
    expect(first.logs.some((l) => l.event.startsWith('key schedule leadership lost'))).toBe(true);
    const firstLogCount = first.logs.length;
    const firstWriteCount = firstWrites.length;
    expect(firstWrites).toEqual(['put 1:published', 'put 1:active', 'put 2:published']);

    release();
    h3.sink.gate = null;
    await waitFor('epoch 2 active everywhere', () => outboundEverywhere(hosts, n, 2));
    await waitFor('epoch 1 deleted', async () => (await statesOf(admin, n)).join() === '2:active,3:published');

    // The second leader continued the schedule it read: it activated the epoch the first one
    // published (same copies, so the same secret), and published only the standby after it.
    expect((await epochsOf(admin, n))[0]!.epoch).toBe(2);
    expect(await copiesOf(admin, n, 2)).toEqual(published2Copies);
    expect(second.logs.filter((l) => l.event === 'epoch published').map((l) => l.fields?.epoch)).toEqual([3]);
    expect(second.logs.some((l) => l.event === 'epoch activated' && l.fields?.epoch === 2)).toBe(true);
    // The first leader stopped at once: no write attempted after the loss, nothing logged as done.
    expect(firstWrites.length).toBe(firstWriteCount);
    expect(first.logs.slice(firstLogCount).filter((l) => l.event.startsWith('epoch '))).toEqual([]);
    // One sequence of epoch numbers, one secret per number.
    await settle();
    expect([...new Set(written.map((r) => r.epoch))]).toEqual([1, 2, 3]);
    for (const e of [1, 2, 3]) {
      expect(new Set(h1Copies.filter((c) => c.epoch === e).map((c) => c.wrapped)).size).toBe(1);
    }
    expect(new Set(hosts.map((h) => h.sink.secret(n.id, 2))).size).toBe(1);

    // Had it tried, the fence would have refused: a write under the lost leadership fails.
    const late = await h1.store.putEpoch(firstLeadership!, { ...published2, epoch: 4 }).catch((e: unknown) => e);
    expect(isStoreError(late, 'VEIL_ERR_NOT_LEADER')).toBe(true);
    expect((await epochsOf(admin, n)).map((r) => r.epoch)).toEqual([2, 3]);
  });

  it('a new leader with no copy of the current epoch cannot rewrap it for a joiner, so it rotates instead', async () => {
    const { admin, network: n, hosts, requests, addHost } = await bed(['h1', 'h2']);
    const first = startLeader(hosts[0]!, requests);
    await waitFor('epoch 1 active', () => outboundEverywhere(hosts, n, 1));
    await waitFor('standby 2 acked', async () => (await admin.listAcks(n.id, 2)).items.length === 2);
    await first.leader.stop();
    const h5 = await addHost('h5'); // joins while nobody leads: nobody rewraps epoch 1 or 2 for it
    const next = startLeader(h5, requests);
    cleanups.push(() => next.leader.stop());
    // The standby it cannot wrap for h5 is replaced, not activated: h5 could not use it.
    await waitFor('epoch 3 active on every host', () => outboundEverywhere([...hosts, h5], n, 3));
    expect(next.logs.find((l) => l.fields?.code === 'VEIL_ERR_KEY_UNAVAILABLE')?.fields).toMatchObject({
      epoch: 1,
      why: 'not-member',
      hosts: ['h5'],
    });
    expect(next.logs.find((l) => l.event === 'epoch retired')?.fields).toMatchObject({
      epoch: 2,
      because: 'unrecoverable',
    });
    expect(next.logs.find((l) => l.event === 'epoch published')?.fields).toMatchObject({
      epoch: 3,
      because: 'unrecoverable',
      members: ['h1', 'h2', 'h5'],
    });
    expect(h5.sink.secret(n.id, 1)).toBeUndefined();
    expect(hosts.map((h) => h.sink.trace(n.id).includes('activate 2'))).toEqual([false, false]);
    // One rotation, not a spin: the only publish after it is the next standby.
    await settle(500);
    const published = next.logs.filter((l) => l.event === 'epoch published').map((l) => l.fields?.because);
    expect(published.filter((b) => b !== 'standby')).toEqual(['unrecoverable']);
  });

  it('a leader that is stopped resigns at once and the next one continues', async () => {
    const { admin, network: n, hosts, requests } = await bed();
    const [h1, h2] = hosts as [SimHost, SimHost];
    const first = startLeader(h1, requests);
    await waitFor('epoch 1 active', () => outboundEverywhere(hosts, n, 1));
    const second = startLeader(h2, requests);
    cleanups.push(() => second.leader.stop());
    await first.leader.stop();
    await waitFor('the second leader takes over', () => second.leader.isLeader);
    await requestRotation({ store: admin, requests }, n.id, 'api:test');
    await waitFor('epoch 2 active everywhere', () => outboundEverywhere(hosts, n, 2));
    expect((await epochsOf(admin, n)).map((r) => r.epoch)).toContain(2);
  });

  it('a term that ends without stop() (leadership given up locally) is resigned before campaigning again: the next candidate leads', async () => {
    const { admin, network: n, hosts, requests } = await bed(['h1', 'h2']);
    const [h1, h2] = hosts as [SimHost, SimHost];
    // h1's store hands out leaderships that the test can declare lost, as EtcdLeadership's own timer
    // does after an event-loop stall: nothing in the store revokes anything.
    const stalls: AbortController[] = [];
    const stalling = new Proxy(h1.store, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target) as unknown;
        if (prop !== 'election') return typeof v === 'function' ? v.bind(target) : v;
        return (...args: Parameters<Store['election']>) => {
          const election = target.election(...args);
          return {
            ...election,
            campaign: async (value: string, opts?: { signal?: AbortSignal }) => {
              const real = await election.campaign(value, opts);
              const stall = new AbortController();
              stalls.push(stall);
              const lost = AbortSignal.any([real.lost, stall.signal]);
              return new Proxy(real, {
                get(t, p) {
                  if (p === 'lost') return lost;
                  if (p === 'onLost')
                    return (listener: (reason: Error) => void) =>
                      lost.aborted
                        ? listener(lost.reason as Error)
                        : lost.addEventListener('abort', () => listener(lost.reason as Error), { once: true });
                  const w = Reflect.get(t, p, t) as unknown;
                  return typeof w === 'function' ? w.bind(t) : w;
                },
              });
            },
          };
        };
      },
    });
    const first = startLeader({ ...h1, store: stalling }, requests);
    cleanups.push(() => first.leader.stop());
    await waitFor('epoch 1 active', () => outboundEverywhere(hosts, n, 1));
    const second = startLeader(h2, requests);
    cleanups.push(() => second.leader.stop());
    await settle();
    expect([first.leader.isLeader, second.leader.isLeader]).toEqual([true, false]);

    stalls[0]!.abort(
      new StoreError('VEIL_ERR_NOT_LEADER', 'could not confirm leadership with etcd within 2/3 of the lease TTL'),
    );
    await waitFor('the second candidate leads', () => second.leader.isLeader, 3000);
    expect(first.leader.isLeader).toBe(false);
    // The lost term's key is gone: the election holds the new leader's key and h1's new campaign behind it.
    const candidates = async () =>
      [...(await admin.dump())]
        .filter(([k]) => k.startsWith(keys.electionPrefix()))
        .map(([, v]) => v)
        .sort()
        .join();
    await waitFor('h1 campaigning again behind h2', async () => (await candidates()) === 'h1,h2');
    await requestRotation({ store: admin, requests }, n.id, 'api:test');
    await waitFor('epoch 2 active everywhere', () => outboundEverywhere(hosts, n, 2));
  });

  it("a network deleted between the leader's read and its publish gets no epoch: nothing left under keys/<id>/, the leader goes on with the others", async () => {
    const { admin, network: n, hosts, requests } = await bed(['h1', 'h2']);
    const doomed = await admin.createNetwork({ name: 'doomed', encrypted: true, ipam: { subnet: '10.79.0.0/24' } });
    let deleted = false;
    const racing = new Proxy(hosts[0]!.store, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target) as unknown;
        if (prop !== 'putEpoch') return typeof v === 'function' ? v.bind(target) : v;
        return async (l: Leadership, r: KeyEpochRecord, copies?: WrappedCopies) => {
          if (r.networkId === doomed.id && !deleted) {
            deleted = true;
            await admin.deleteNetwork(doomed.id); // docker network rm, just after the leader read the network
          }
          return target.putEpoch(l, r, copies);
        };
      },
    });
    const { leader, logs } = startLeader({ ...hosts[0]!, store: racing }, requests);
    cleanups.push(() => leader.stop());
    await waitFor('epoch 1 active on the other network', () => outboundEverywhere(hosts, n, 1));
    await waitFor('the delete raced the publish', () => deleted);
    await settle(200);
    expect([...(await admin.dump()).keys()].filter((k) => k.includes(doomed.id))).toEqual([]);
    expect(leader.isLeader).toBe(true);
    expect(leader.status().networks.map((s) => s.networkId)).toEqual([n.id]);
    expect(logs.some((l) => l.event === 'epoch published' && l.fields?.network === doomed.id)).toBe(false);
    for (const h of hosts) {
      await h.installer.idle();
      expect(h.sink.trace(doomed.id)).toEqual([]);
    }
    await requestRotation({ store: admin, requests }, n.id, 'api:test');
    await waitFor('epoch 2 active everywhere', () => outboundEverywhere(hosts, n, 2));
  });

  it('epochs written by 0.2 (copies inside the record, none under ~/copies/) are rotated away: a new epoch every host opens', async () => {
    const { backend, admin, network: n, hosts, requests } = await bed();
    // What a 0.2 leader left: an active epoch whose wrapped copies sit in the record itself.
    const old = { networkId: n.id, epoch: 4, state: 'active', publishedAt: 1, activatedAt: 2, wrapped: { h1: 'AAAA' } };
    backend.commit([{ put: keys.keyEpoch(n.id, 4), value: JSON.stringify(old) }]);
    const { leader, logs } = startLeader(hosts[0]!, requests);
    cleanups.push(() => leader.stop());
    await waitFor('epoch 5 active on every host', () => outboundEverywhere(hosts, n, 5));
    expect(logs.find((l) => l.event === 'epoch published')?.fields).toMatchObject({
      epoch: 5,
      because: 'unrecoverable',
    });
    expect(new Set(hosts.map((h) => h.sink.secret(n.id, 5))).size).toBe(1);
    for (const h of hosts) expect(h.sink.secret(n.id, 4)).toBeUndefined();
    // The old record is retired and deleted on the schedule, without its foreign field.
    await waitFor('epoch 4 deleted', async () => (await statesOf(admin, n)).join() === '5:active,6:published');
  });

  it('requestRotation refuses a plain network and an unknown one', async () => {
    const { admin, requests } = await bed([]);
    const plain = await admin.createNetwork({ name: 'plain', ipam: { subnet: '10.78.0.0/24' } });
    await expect(requestRotation({ store: admin, requests }, plain.id, 'x')).rejects.toMatchObject({
      code: 'VEIL_ERR_NOT_ENCRYPTED',
    });
    const err = await requestRotation({ store: admin, requests }, 'nope', 'x').catch((e: unknown) => e);
    expect(isStoreError(err, 'VEIL_ERR_NOT_FOUND')).toBe(true);
  });

  it('with an injected clock the default schedule rotates at exactly 12 hours', async () => {
    const { admin, network: n, hosts, requests } = await bed(['h1', 'h2']);
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    const t0 = clock.now();
    const { leader } = startLeader(hosts[0]!, requests, { clock, config: {} });
    cleanups.push(() => leader.stop());
    await waitFor('epoch 1 active', () => outboundEverywhere(hosts, n, 1));
    expect((await epochsOf(admin, n))[0]).toMatchObject({ epoch: 1, publishedAt: t0, activatedAt: t0 });
    await waitFor('standby 2 acked', async () => (await admin.listAcks(n.id, 2)).items.length === 2);
    await waitFor(
      'the leader waits for the timer',
      () => leader.status().networks[0]?.waiting?.until === t0 + 12 * 3600_000,
    );

    clock.advance(12 * 3600_000 - 1);
    await settle(100);
    expect(await statesOf(admin, n)).toEqual(['1:active', '2:published']);
    expect(hosts.map((h) => h.sink.outbound.get(n.id))).toEqual([1, 1]);

    clock.advance(1);
    await waitFor('epoch 2 active everywhere', () => outboundEverywhere(hosts, n, 2));
    expect((await epochsOf(admin, n))[1]).toMatchObject({ epoch: 2, publishedAt: t0, activatedAt: t0 + 12 * 3600_000 });
    expect(leader.status().networks[0]?.waiting?.reason).toMatch(/epoch 1 stays installed for the grace period/);
  });

  it('idle, the leader makes no store calls: it waits on watches and one timer, never polls', async () => {
    const { network: n, hosts, requests } = await bed(['h1', 'h2']);
    const { store: counting, calls } = countingCalls(hosts[0]!.store);
    const { leader } = startLeader({ ...hosts[0]!, store: counting }, requests, { config: { graceMs: 60_000 } });
    cleanups.push(() => leader.stop());
    await waitFor('epoch 1 active', () => outboundEverywhere(hosts, n, 1));
    await waitFor('standby 2 acked', async () => (await hosts[0]!.store.listAcks(n.id, 2)).items.length === 2);
    await settle(100);
    const before = calls.length;
    await settle(600);
    expect(calls.slice(before)).toEqual([]);
    // ...and a store change wakes it at once.
    await requestRotation({ store: hosts[1]!.store, requests }, n.id, 'h2');
    await waitFor('epoch 2 active', () => outboundEverywhere(hosts, n, 2));
  });

  it('waiting for acks, it counts them from its watch and activates on the last one without reading again (docs/keys.md "Leader")', async () => {
    const { admin, network: n, hosts, requests } = await bed(['h1', 'h2', 'h3', 'h4']);
    // h2..h4 cannot install epoch 2 or later: their acks for it are written here, one at a time.
    const late = hosts.slice(1);
    let release!: () => void;
    const open = new Promise<void>((r) => (release = r));
    cleanups.push(async () => release()); // never leave an installer blocked
    for (const h of late) h.sink.gate = { from: 2, open };
    const { store: counting, calls } = countingCalls(hosts[0]!.store);
    const { leader } = startLeader({ ...hosts[0]!, store: counting }, requests, { config: { graceMs: 60_000 } });
    cleanups.push(() => leader.stop());
    await waitFor('epoch 1 active', () => outboundEverywhere(hosts, n, 1));
    await waitFor('standby 2 acked by h1', async () => (await admin.listAcks(n.id, 2)).items.length === 1);
    await settle(100);
    const reads = () => calls.filter((c) => c === 'listHosts').length;
    const ack = (h: SimHost, incarnation = h.incarnation) =>
      h.store.ack(h.lease, { networkId: n.id, epoch: 2, hostId: h.id, incarnation, installedAt: Date.now() });

    // The standby's acks are counted too: nothing to read for them.
    let before = reads();
    await ack(late[0]!);
    await ack(late[1]!);
    await settle(100);
    expect(reads()).toBe(before);
    // An ack from another incarnation of a host is not counted here: the leader reads, and still waits.
    await ack(late[2]!, 'f'.repeat(16));
    await waitFor('a read for the unknown incarnation', () => reads() > before);
    // The rotation is due; the leader reads once and waits for the last ack.
    before = reads();
    await requestRotation({ store: hosts[0]!.store, requests }, n.id, 'h1');
    await waitFor('a read for the request', () => reads() > before);
    await settle(100);
    expect(await statesOf(admin, n)).toEqual(['1:active', '2:published']);

    // The last one: the leader activates on what it read and counted, with no read before its write.
    const from = calls.length;
    await ack(late[2]!);
    await waitFor('epoch 2 active', async () => (await statesOf(admin, n)).includes('2:active'));
    const after = calls.slice(from);
    expect(after).toContain('putEpoch');
    expect(after.slice(0, after.indexOf('putEpoch'))).not.toContain('listHosts');
  });

  it('wrapping for many members yields to the event loop between batches: the gateway shares it', async () => {
    const { admin, network: n, hosts, requests } = await bed(['h1']);
    // 250 more members, registered only: the publish, not their acks, is what this watches.
    for (let i = 0; i < 250; i++) await admin.registerHost(sampleHost(`m${i}`), 30);
    // The store's calls and the event loop's turn, in the order they happen.
    const order: string[] = [];
    const { store: counting } = countingCalls(hosts[0]!.store, order);
    const { leader } = startLeader({ ...hosts[0]!, store: counting }, requests, {
      // Called as the publish begins: a turn of the event loop queued then runs before the write
      // only if wrapping 251 copies let the loop turn.
      randomBytes: (len) => {
        order.push('secret');
        setImmediate(() => order.push('turn'));
        return new Uint8Array(len).fill(7);
      },
    });
    cleanups.push(() => leader.stop());
    await waitFor('epoch 1 written', () => order.includes('putEpoch') && order.includes('turn'));
    const publish = order.slice(order.indexOf('secret'));
    expect(publish.indexOf('turn')).toBeLessThan(publish.indexOf('putEpoch'));
    expect((await admin.listCopies(n.id)).items.filter((c) => c.epoch === 1)).toHaveLength(251);
  });

  it('epoch secrets come from the injected randomBytes', async () => {
    const { network: n, hosts, requests } = await bed(['h1']);
    const fixed = new Uint8Array(32).fill(0x5a);
    const { leader } = startLeader(hosts[0]!, requests, { randomBytes: (len) => fixed.slice(0, len) });
    cleanups.push(() => leader.stop());
    await waitFor('epoch 1 active', () => outboundEverywhere(hosts, n, 1));
    expect(hosts[0]!.sink.secret(n.id, 1)).toBe('5a'.repeat(32));
    expect(hexToBytes(hosts[0]!.sink.secret(n.id, 1)!)).toEqual(fixed);
  });

  it('frees a departed host\'s index only once no epoch names it (docs/etcd.md "Host indexes")', async () => {
    const { admin, network: n, hosts, requests } = await bed();
    const [h1, h2, h3] = hosts as [SimHost, SimHost, SimHost];
    const { leader, logs } = startLeader(h1, requests);
    cleanups.push(() => leader.stop());
    await waitFor('epoch 1 active on every host', () => outboundEverywhere(hosts, n, 1));
    const claims = async () => [...(await admin.dump()).keys()].filter((k) => k.startsWith(keys.hostIndexPrefix()));
    const h3Index = h3.lease.index;
    await h3.stop({ leave: true });
    await waitFor('h3 gone', async () => !(await admin.listHosts()).items.some((h) => h.id === 'h3'));
    await settle();
    // Epoch 1 was wrapped for h3: its index stays claimed while that epoch lives.
    expect(await claims()).toContain(keys.hostIndex(h3Index));
    await requestRotation({ store: h2.store, requests }, n.id, 'h2');
    // The standby h3 held a copy of was replaced: epoch 3 is the one activated.
    await waitFor('epochs 1 and 2 deleted', async () => (await statesOf(admin, n)).join() === '3:active,4:published');
    await waitFor("h3's index freed", async () => !(await claims()).includes(keys.hostIndex(h3Index)));
    expect((await claims()).sort()).toEqual([keys.hostIndex(h1.lease.index), keys.hostIndex(h2.lease.index)].sort());
    expect(logs.find((l) => l.event === 'host indexes freed')?.fields).toMatchObject({ count: 1 });
  });
});
