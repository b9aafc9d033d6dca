import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isStoreError, type StoreErrorCode } from '../../src/store/errors.js';
import { VNI_ALLOCATION_MIN } from '../../src/model/ids.js';
import { SHARED_RANGE, keys, parseKey } from '../../src/store/layout.js';
import { COPIES_PER_TXN } from '../../src/store/logic.js';
import type { KeyEpochRecord, Store, WatchEvent } from '../../src/store/types.js';
import { sampleHost, waitFor, type StoreBed, type StoreImpl } from './harness.js';

/*
 * One table of Store behaviours, run against the etcd store (a real etcd 3.4 on
 * loopback) and against the in-memory fake: the fake is only useful if it agrees.
 */

async function expectCode(p: Promise<unknown>, code: StoreErrorCode): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  if (!isStoreError(err, code))
    throw new Error(`expected ${code}, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
}

const net = (name: string, subnet: string, extra: Record<string, unknown> = {}) => ({
  name,
  ipam: { subnet },
  ...extra,
});

/** The Store contract; run on the memory store (unit tier) and on real etcd (system tier). */
export function describeStore(impl: StoreImpl): void {
  describe(`Store (${impl.name})`, () => {
    let bed: StoreBed;
    let store: Store;

    beforeAll(() => impl.start());
    afterAll(() => impl.stop());
    beforeEach(async () => {
      bed = await impl.bed();
      store = bed.store;
    });
    afterEach(() => bed.close());

    describe('hosts', () => {
      it('registers hosts under leases with stable, distinct indexes', async () => {
        const a = await store.registerHost(sampleHost('host-a'), 30);
        const b = await store.registerHost(sampleHost('host-b'), 30);
        expect(a.index).toBeGreaterThanOrEqual(1);
        expect(b.index).not.toBe(a.index);
        const hosts = await store.listHosts();
        expect(hosts.items.map((h) => [h.id, h.index]).sort()).toEqual([
          ['host-a', a.index],
          ['host-b', b.index],
        ]);
        expect(hosts.revision).toBeGreaterThan(0);

        // A restart (new incarnation, new lease) keeps the index: it is part of the host's SPIs.
        await a.revoke();
        expect((await store.listHosts()).items.map((h) => h.id)).toEqual(['host-b']);
        const a2 = await store.registerHost(sampleHost('host-a', { incarnation: 'second' }), 30);
        expect(a2.index).toBe(a.index);
        expect((await store.listHosts()).items.find((h) => h.id === 'host-a')?.incarnation).toBe('second');
      });

      it('a host whose process stops keeping its lease alive disappears after the TTL', async () => {
        const dying = bed.client();
        const lease = await dying.registerHost(sampleHost('host-dies'), 1);
        await store.registerHost(sampleHost('host-lives'), 30);
        expect((await store.listHosts()).items.map((h) => h.id).sort()).toEqual(['host-dies', 'host-lives']);
        const start = Date.now();
        await dying.close(); // the process is gone: nobody sends keepalives
        // ... nor revokes: its record lives until the TTL runs out.
        await expectCode(lease.revoke(), 'VEIL_ERR_STORE_UNAVAILABLE');
        expect((await store.listHosts()).items.map((h) => h.id)).toContain('host-dies');
        await waitFor(
          'the dead host to disappear',
          async () => !(await store.listHosts()).items.some((h) => h.id === 'host-dies'),
          15_000,
        );
        expect(Date.now() - start).toBeGreaterThanOrEqual(900); // not before the TTL (etcd rounds TTLs up to its minimum)
        expect((await store.listHosts()).items.map((h) => h.id)).toEqual(['host-lives']);
        expect(lease.index).toBeGreaterThanOrEqual(1);
      });

      it('a second live registration of the same host id is refused (VEIL_ERR_HOST_ID_IN_USE, 409): the live record, its lease and index stay', async () => {
        const original = await store.registerHost(
          { ...sampleHost('host-a', { incarnation: 'original' }), address: '192.0.2.1' },
          30,
        );
        const clone = bed.client(); // a cloned VM with the same hostname, on its own client
        const err = await clone
          .registerHost({ ...sampleHost('host-a', { incarnation: 'clone' }), address: '192.0.2.99' }, 30)
          .catch((e: unknown) => e);
        expect(isStoreError(err, 'VEIL_ERR_HOST_ID_IN_USE')).toBe(true);
        expect(err).toMatchObject({ status: 409, message: 'host id is registered by a live host: host-a' });
        const hosts = (await store.listHosts()).items;
        expect(hosts).toHaveLength(1);
        expect(hosts[0]).toMatchObject({
          id: 'host-a',
          address: '192.0.2.1',
          incarnation: 'original',
          index: original.index,
        });
        expect([...(await store.dump()).keys()].filter((k) => k.startsWith('hostindex/'))).toEqual([
          `hostindex/${original.index}`,
        ]);
        expect(original.lost.aborted).toBe(false);
        // Once the live record is gone (a clean leave, or its lease expired), the id registers again with its index.
        await original.revoke();
        const again = await clone.registerHost(
          { ...sampleHost('host-a', { incarnation: 'restarted' }), address: '192.0.2.1' },
          30,
        );
        expect(again.index).toBe(original.index);
        expect((await store.listHosts()).items.map((h) => h.incarnation)).toEqual(['restarted']);
      });

      it("a registration naming the live record's incarnation as its gone predecessor replaces it (its lease and acks go); any other is refused", async () => {
        const n = await store.createNetwork(net('enc', '10.24.0.0/24', { encrypted: true }));
        const crashed = await store.registerHost(sampleHost('host-a', { incarnation: 'aaaaaaaaaaaaaaaa' }), 30);
        expect(crashed.replaced).toBe(false);
        await store.ack(crashed, {
          networkId: n.id,
          epoch: 1,
          hostId: 'host-a',
          incarnation: 'aaaaaaaaaaaaaaaa',
          installedAt: 1,
        });
        const restarted = bed.client(); // the same host's next process, on its own client
        // Naming another incarnation proves nothing about this record: refused, nothing changed.
        await expectCode(
          restarted.registerHost(sampleHost('host-a', { incarnation: 'cccccccccccccccc' }), 30, {
            replaces: 'bbbbbbbbbbbbbbbb',
          }),
          'VEIL_ERR_HOST_ID_IN_USE',
        );
        expect((await store.listHosts()).items.map((h) => h.incarnation)).toEqual(['aaaaaaaaaaaaaaaa']);
        const lease = await restarted.registerHost(sampleHost('host-a', { incarnation: 'cccccccccccccccc' }), 30, {
          replaces: 'aaaaaaaaaaaaaaaa',
        });
        expect(lease.replaced).toBe(true);
        expect(lease.index).toBe(crashed.index);
        expect((await store.listHosts()).items.map((h) => h.incarnation)).toEqual(['cccccccccccccccc']);
        expect((await store.dump()).has(keys.ack(n.id, 1, 'host-a')), "the old lease's ack went with it").toBe(false);
        // The replaced record is no one's predecessor any more: naming it again replaces nothing.
        await expectCode(
          bed.client().registerHost(sampleHost('host-a', { incarnation: 'dddddddddddddddd' }), 30, {
            replaces: 'aaaaaaaaaaaaaaaa',
          }),
          'VEIL_ERR_HOST_ID_IN_USE',
        );
        expect(lease.lost.aborted).toBe(false);
      });

      it("an index comes back once its host is gone and no key epoch names it; never a live or named host's", async () => {
        const [a, b, c] = [
          await store.registerHost(sampleHost('host-a'), 30),
          await store.registerHost(sampleHost('host-b'), 30),
          await store.registerHost(sampleHost('host-c'), 30),
        ];
        const n = await store.createNetwork(net('enc', '10.21.0.0/24', { encrypted: true }));
        const leader = await store.election('keyschedule', 5).campaign('host-c');
        // Epoch 1 holds a wrapped copy for host-b: SAs of host-b's index may still be installed somewhere.
        await store.putEpoch(
          leader,
          { networkId: n.id, epoch: 1, state: 'active', publishedAt: 1, copies: 1 },
          { 'host-b': Buffer.from('wrapped').toString('base64') },
        );
        await a.revoke();
        await b.revoke();
        // host-a is gone and named by nothing; host-b is named by epoch 1; host-c is live.
        expect(await store.reclaimHostIndexes()).toEqual([{ index: a.index, hostId: 'host-a' }]);
        expect(await store.reclaimHostIndexes()).toEqual([]);
        const held = async () =>
          [...(await store.dump()).entries()]
            .filter(([k]) => k.startsWith('hostindex/'))
            .map(([k, v]) => [Number(k.slice('hostindex/'.length)), v])
            .sort((x, y) => (x[0] as number) - (y[0] as number));
        expect(await held()).toEqual(
          [
            [b.index, 'host-b'],
            [c.index, 'host-c'],
          ].sort((x, y) => (x[0] as number) - (y[0] as number)),
        );
        // The freed index goes to the next new host (the lowest free one).
        const d = await store.registerHost(sampleHost('host-d'), 30);
        expect(d.index).toBe(a.index);
        // host-b comes back while epoch 1 lives: its own index, SPIs unchanged.
        const b2 = await store.registerHost(sampleHost('host-b', { incarnation: 'again' }), 30);
        expect(b2.index).toBe(b.index);
        await b2.revoke();
        // Once the epoch is gone, nothing names host-b any more: its index is freed too.
        await store.deleteEpoch(leader, n.id, 1);
        expect(await store.reclaimHostIndexes()).toEqual([{ index: b.index, hostId: 'host-b' }]);
        // host-a returns under its old id and registers again (its old index now host-d's).
        const a2 = await store.registerHost(sampleHost('host-a', { incarnation: 'back' }), 30);
        expect(a2.index).not.toBe(d.index);
        expect(a2.index).not.toBe(c.index);
        expect((await store.listHosts()).items.map((h) => [h.id, h.index]).sort()).toEqual(
          [
            ['host-a', a2.index],
            ['host-c', c.index],
            ['host-d', d.index],
          ].sort(),
        );
      });

      it('two first registrations of one new host id racing: one wins, the other is refused; one index claimed', async () => {
        const results = await Promise.allSettled(
          Array.from({ length: 4 }, (_, i) =>
            bed.client().registerHost(sampleHost('host-new', { incarnation: `i${i}` }), 30),
          ),
        );
        expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
        for (const r of results)
          if (r.status === 'rejected') expect(isStoreError(r.reason, 'VEIL_ERR_HOST_ID_IN_USE')).toBe(true);
        expect((await store.listHosts()).items.map((h) => h.id)).toEqual(['host-new']);
        expect([...(await store.dump()).keys()].filter((k) => k.startsWith('hostindex/'))).toHaveLength(1);
      });

      it('refuses an invalid host record and writes nothing', async () => {
        const before = await store.dump();
        await expectCode(store.registerHost({ ...sampleHost('bad/id') }, 10), 'VEIL_ERR_REQUEST_INVALID');
        await expectCode(store.registerHost({ ...sampleHost('ok'), publicKey: 'zz' }, 10), 'VEIL_ERR_REQUEST_INVALID');
        // Low-order X25519 points (RFC 7748 §6.1): 0 and p - 1; every secret agreed with them is zero.
        for (const publicKey of ['00'.repeat(32), `ec${'ff'.repeat(30)}7f`])
          await expectCode(store.registerHost({ ...sampleHost('ok'), publicKey }, 10), 'VEIL_ERR_REQUEST_INVALID');
        await expectCode(
          store.registerHost({ ...sampleHost('ok'), address: '300.1.1.1' }, 10),
          'VEIL_ERR_REQUEST_INVALID',
        );
        expect(await store.dump()).toEqual(before);
      });
    });

    describe('networks', () => {
      it('creates a network with a Docker-range VNI and an index, readable by id and by name', async () => {
        const n = await store.createNetwork(net('blue', '10.1.0.0/24', { encrypted: true, labels: { team: 'a' } }));
        expect(n.id).toMatch(/^[0-9a-f]{64}$/);
        expect(n.vni).toBeGreaterThanOrEqual(VNI_ALLOCATION_MIN);
        expect(n.index).toBeGreaterThanOrEqual(0);
        expect(n).toMatchObject({
          name: 'blue',
          driver: 'overlay',
          encrypted: true,
          attachable: false,
          internal: false,
          labels: { team: 'a' },
        });
        expect(n.ipam).toEqual({ subnet: '10.1.0.0/24', gateway: '10.1.0.1' });
        expect(await store.getNetwork(n.id)).toEqual(n);
        expect(await store.getNetwork('blue')).toEqual(n);
        await expectCode(store.getNetwork('nope'), 'VEIL_ERR_NOT_FOUND');
        await expectCode(store.getNetwork('not a/name'), 'VEIL_ERR_NOT_FOUND');
        const all = await store.listNetworks();
        expect(all.items).toEqual([n]);

        const dump = await store.dump();
        expect(dump.get(keys.name('blue'))).toBe(n.id);
        expect(dump.get(keys.vni(n.vni))).toBe(n.id);
        expect(dump.get(keys.netIndex(n.index))).toBe(n.id);
        expect(JSON.parse(dump.get(keys.network(n.id))!)).toEqual(n);
      });

      it('gives distinct errors for a taken name, a taken VNI and an overlapping subnet', async () => {
        const a = await store.createNetwork(net('a', '10.2.0.0/24', { vni: 5000 }));
        expect(a.vni).toBe(5000);
        await expectCode(store.createNetwork(net('a', '10.3.0.0/24')), 'VEIL_ERR_NETWORK_NAME_TAKEN');
        await expectCode(store.createNetwork(net('b', '10.3.0.0/24', { vni: 5000 })), 'VEIL_ERR_VNI_TAKEN');
        await expectCode(store.createNetwork(net('c', '10.2.0.128/25')), 'VEIL_ERR_SUBNET_OVERLAP');
        const b = await store.createNetwork(net('b', '10.3.0.0/24'));
        expect(b.vni).not.toBe(5000);
        expect(b.index).not.toBe(a.index);
      });

      it('an invalid request changes nothing in the store', async () => {
        await store.createNetwork(net('keep', '10.9.0.0/24'));
        const before = await store.dump();
        const bad = [
          net('x', '10.10.0.0/33'),
          net('x', '10.10.0.1/24'), // host bits set
          net('x', 'banana'),
          { name: 'x', ipam: { subnet: '10.10.0.0/24', gateway: '10.11.0.1' } },
          { name: 'x', ipam: { subnet: '10.10.0.0/24', ipRange: '10.11.0.0/28' } },
          net('x', '10.10.0.0/30'), // room for one endpoint only
          net('bad name!', '10.10.0.0/24'),
          net('x', '10.10.0.0/24', { vni: 12 }),
          net('x', '10.10.0.0/24', { labels: { a: 1 } }),
        ];
        for (const spec of bad) await expectCode(store.createNetwork(spec as never), 'VEIL_ERR_REQUEST_INVALID');
        await expectCode(
          store.createEndpoint({ networkId: 'keep', name: 'e', hostId: 'h', ipv4: '10.9.1.5' }),
          'VEIL_ERR_REQUEST_INVALID',
        );
        await expectCode(
          store.createEndpoint({ networkId: 'keep', name: 'e', hostId: 'h', ipv4: '10.9.0.1' }),
          'VEIL_ERR_REQUEST_INVALID',
        ); // the gateway
        await expectCode(
          store.createEndpoint({ networkId: 'keep', name: 'e', hostId: 'h', mac: 'nope' }),
          'VEIL_ERR_REQUEST_INVALID',
        );
        await expectCode(store.createEndpoint({ networkId: 'missing', name: 'e', hostId: 'h' }), 'VEIL_ERR_NOT_FOUND');
        await expectCode(store.deleteNetwork('missing'), 'VEIL_ERR_NOT_FOUND');
        await expectCode(store.deleteEndpoint('keep', 'missing'), 'VEIL_ERR_NOT_FOUND');
        expect(await store.dump()).toEqual(before);
      });

      it('20 concurrent creates with the same name: exactly one wins', async () => {
        const results = await Promise.allSettled(
          Array.from({ length: 20 }, (_, i) => bed.client().createNetwork(net('same', `10.${100 + i}.0.0/24`))),
        );
        const won = results.filter((r) => r.status === 'fulfilled');
        const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        expect(won).toHaveLength(1);
        expect(lost.map((r) => (isStoreError(r.reason) ? r.reason.code : String(r.reason)))).toEqual(
          Array(19).fill('VEIL_ERR_NETWORK_NAME_TAKEN'),
        );
        const kinds = [...(await store.dump()).keys()].map((k) => parseKey(k)?.kind);
        expect(kinds.sort()).toEqual(['name', 'netIndex', 'network', 'vni']);
      });

      it('concurrent creates with different names get distinct VNIs and indexes', async () => {
        const nets = await Promise.all(
          Array.from({ length: 10 }, (_, i) => bed.client().createNetwork(net(`n${i}`, `10.${50 + i}.0.0/24`))),
        );
        expect(new Set(nets.map((n) => n.vni)).size).toBe(10);
        expect(new Set(nets.map((n) => n.index)).size).toBe(10);
        expect((await store.listNetworks()).items).toHaveLength(10);
      });

      it('delete is refused while endpoints exist, then frees name, VNI and index', async () => {
        const n = await store.createNetwork(net('del', '10.4.0.0/24', { vni: 7000 }));
        const ep = await store.createEndpoint({ networkId: n.id, name: 'c1', hostId: 'h1' });
        await expectCode(store.deleteNetwork(n.id), 'VEIL_ERR_NETWORK_HAS_ENDPOINTS');
        expect(await store.getNetwork(n.id)).toEqual(n);
        await store.deleteEndpoint(n.id, ep.id);
        await store.deleteNetwork('del'); // by name, like docker network rm
        expect(await store.dump()).toEqual(new Map());
        const again = await store.createNetwork(net('del', '10.4.0.0/24', { vni: 7000 }));
        expect(again.id).not.toBe(n.id);
      });

      it('delete racing an endpoint create: never a network deleted with an endpoint left behind', async () => {
        for (let round = 0; round < 5; round++) {
          const n = await store.createNetwork(net(`race${round}`, '10.5.0.0/24'));
          const [del, ep] = await Promise.allSettled([
            bed.client().deleteNetwork(n.id),
            bed.client().createEndpoint({ networkId: n.id, name: 'c', hostId: 'h' }),
          ]);
          const dump = await store.dump();
          if (del.status === 'fulfilled') {
            expect(ep.status).toBe('rejected');
            expect(dump.size).toBe(0);
          } else {
            expect(ep.status).toBe('fulfilled');
            expect(isStoreError(del.reason, 'VEIL_ERR_NETWORK_HAS_ENDPOINTS')).toBe(true);
            const epId = (ep as PromiseFulfilledResult<{ id: string }>).value.id;
            await store.deleteEndpoint(n.id, epId);
            await store.deleteNetwork(n.id);
          }
        }
      });
    });

    describe('endpoints and IPAM', () => {
      it('allocates the lowest free address, skipping network, gateway and broadcast; honours requests and ip-range', async () => {
        const n = await store.createNetwork(net('ipam', '10.6.0.0/29')); // .0 net, .1 gw, .2-.6 usable, .7 bcast
        const e1 = await store.createEndpoint({ networkId: n.id, name: 'c1', hostId: 'h1', aliases: ['web'] });
        expect(e1).toMatchObject({
          ipv4: '10.6.0.2',
          mac: '02:42:0a:06:00:02',
          aliases: ['web'],
          hostId: 'h1',
          networkId: n.id,
        });
        const e6 = await store.createEndpoint({
          networkId: 'ipam',
          name: 'c6',
          hostId: 'h1',
          ipv4: '10.6.0.6',
          mac: '02:00:00:00:00:06',
        });
        expect(e6).toMatchObject({ ipv4: '10.6.0.6', mac: '02:00:00:00:00:06' });
        await expectCode(
          store.createEndpoint({ networkId: n.id, name: 'dup', hostId: 'h2', ipv4: '10.6.0.6' }),
          'VEIL_ERR_IP_TAKEN',
        );
        await expectCode(
          store.createEndpoint({ networkId: n.id, id: e1.id, name: 'dup', hostId: 'h2' }),
          'VEIL_ERR_ENDPOINT_EXISTS',
        );
        const rest = [];
        for (let i = 0; i < 3; i++)
          rest.push((await store.createEndpoint({ networkId: n.id, name: `r${i}`, hostId: 'h2' })).ipv4);
        expect(rest).toEqual(['10.6.0.3', '10.6.0.4', '10.6.0.5']);
        await expectCode(
          store.createEndpoint({ networkId: n.id, name: 'full', hostId: 'h2' }),
          'VEIL_ERR_IPAM_EXHAUSTED',
        );

        // Disconnect frees the address, in the same transaction.
        await store.deleteEndpoint(n.id, e1.id);
        expect((await store.dump()).has(keys.ipam(n.id, '10.6.0.2'))).toBe(false);
        expect((await store.createEndpoint({ networkId: n.id, name: 'again', hostId: 'h3' })).ipv4).toBe('10.6.0.2');

        const ranged = await store.createNetwork({
          name: 'ranged',
          ipam: { subnet: '10.7.0.0/24', gateway: '10.7.0.254', ipRange: '10.7.0.128/30' },
        });
        const ips = [];
        for (let i = 0; i < 4; i++)
          ips.push((await store.createEndpoint({ networkId: ranged.id, name: `x${i}`, hostId: 'h' })).ipv4);
        expect(ips).toEqual(['10.7.0.128', '10.7.0.129', '10.7.0.130', '10.7.0.131']);
        const listed = await store.listEndpoints(ranged.id);
        expect(listed.items.map((e) => e.ipv4).sort()).toEqual(ips);
      });

      it('50 concurrent creates on a /27: distinct addresses, then a clear exhaustion error and nothing partial', async () => {
        const n = await store.createNetwork(net('busy', '10.8.0.0/27')); // 32 - net - bcast - gw = 29
        const results = await Promise.allSettled(
          Array.from({ length: 50 }, (_, i) =>
            bed.client().createEndpoint({ networkId: n.id, name: `c${i}`, hostId: `h${i % 3}` }),
          ),
        );
        const ok = results
          .filter((r) => r.status === 'fulfilled')
          .map((r) => (r as PromiseFulfilledResult<{ ipv4: string; id: string }>).value);
        const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        expect(ok).toHaveLength(29);
        expect(new Set(ok.map((e) => e.ipv4)).size).toBe(29);
        expect(ok.map((e) => e.ipv4)).not.toContain('10.8.0.1');
        expect(failed.map((r) => (isStoreError(r.reason) ? r.reason.code : String(r.reason)))).toEqual(
          Array(21).fill('VEIL_ERR_IPAM_EXHAUSTED'),
        );
        expect(failed[0]!.reason.message).toMatch(/no free IP address.*busy/);

        // Exactly one ipam key per endpoint, each pointing at the endpoint holding that address.
        const dump = await store.dump();
        const ipam = [...dump].filter(([k]) => parseKey(k)?.kind === 'ipam');
        const eps = [...dump]
          .filter(([k]) => parseKey(k)?.kind === 'endpoint')
          .map(([, v]) => JSON.parse(v) as { id: string; ipv4: string });
        expect(ipam).toHaveLength(29);
        expect(eps).toHaveLength(29);
        for (const e of eps) expect(dump.get(keys.ipam(n.id, e.ipv4))).toBe(e.id);
      });

      it('an endpoint learns its name, aliases, namespace and interface later; address, MAC and host stay', async () => {
        const n = await store.createNetwork(net('later', '10.9.1.0/24'));
        const ep = await store.createEndpoint({ networkId: n.id, name: 'docker-1234', hostId: 'h1' });
        const named = await store.updateEndpoint(n.id, ep.id, {
          name: 'web',
          aliases: ['www'],
          sandbox: { netns: '/var/run/docker/netns/abc' },
          ifName: 'eth0',
        });
        expect(named).toEqual({
          ...ep,
          name: 'web',
          aliases: ['www'],
          sandbox: { netns: '/var/run/docker/netns/abc' },
          ifName: 'eth0',
        });
        expect((await store.listEndpoints(n.id)).items).toEqual([named]);
        await expectCode(store.updateEndpoint(n.id, ep.id, { name: '' }), 'VEIL_ERR_REQUEST_INVALID');
        await expectCode(store.updateEndpoint(n.id, ep.id, { aliases: [''] }), 'VEIL_ERR_REQUEST_INVALID');
        await expectCode(store.updateEndpoint(n.id, 'f'.repeat(64), { name: 'x' }), 'VEIL_ERR_NOT_FOUND');
        expect((await store.listEndpoints(n.id)).items).toEqual([named]);
      });

      it('an address reserved before its endpoint (Docker IPAM): taken for others, the endpoint takes it over, release is idempotent', async () => {
        const n = await store.createNetwork(net('docker', '10.9.0.0/29')); // .2 .. .6
        const a = await store.reserveAddress(n.id, 'h1');
        expect(a).toBe('10.9.0.2');
        expect(await store.reserveAddress(n.id, 'h1', '10.9.0.5')).toBe('10.9.0.5');
        await expectCode(store.reserveAddress(n.id, 'h2', '10.9.0.5'), 'VEIL_ERR_IP_TAKEN');
        const held = await store.listReservations(n.id, 'h1');
        expect(held.map((r) => r.ipv4)).toEqual([a, '10.9.0.5']);
        expect(await store.listReservations(n.id, 'h2')).toEqual([]);
        await expectCode(
          store.createEndpoint({ networkId: n.id, name: 'other', hostId: 'h2', ipv4: a }),
          'VEIL_ERR_IP_TAKEN',
        );
        // Another holder's reservation is not this one's; a free address is nobody's reservation.
        await expectCode(
          store.createEndpoint({ networkId: n.id, name: 'thief', hostId: 'h2', ipv4: a, reservedBy: 'h2' }),
          'VEIL_ERR_IP_TAKEN',
        );
        await expectCode(
          store.createEndpoint({ networkId: n.id, name: 'none', hostId: 'h2', ipv4: '10.9.0.6', reservedBy: 'h2' }),
          'VEIL_ERR_NOT_FOUND',
        );
        expect((await store.createEndpoint({ networkId: n.id, name: 'free', hostId: 'h2' })).ipv4).toBe('10.9.0.3');
        const ep = await store.createEndpoint({
          networkId: n.id,
          name: 'web',
          hostId: 'h1',
          ipv4: a,
          reservedBy: 'h1',
        });
        expect(ep.ipv4).toBe(a);
        expect((await store.dump()).get(keys.ipam(n.id, a))).toBe(ep.id);
        expect((await store.listReservations(n.id, 'h1')).map((r) => r.ipv4)).toEqual(['10.9.0.5']); // taken over
        // A release naming another reservation of the address (an older one) frees nothing.
        await store.releaseAddress(n.id, '10.9.0.5', 'h1', held[1]!.revision + 1000);
        expect((await store.listReservations(n.id, 'h1')).map((r) => r.ipv4)).toEqual(['10.9.0.5']);
        // Docker releases after deleting the endpoint: the endpoint's address is not a reservation any more.
        await store.releaseAddress(n.id, a, 'h1');
        expect((await store.dump()).get(keys.ipam(n.id, a))).toBe(ep.id);
        await store.deleteEndpoint(n.id, ep.id);
        await store.releaseAddress(n.id, a, 'h1');
        await store.releaseAddress(n.id, '10.9.0.5', 'h2'); // not h2's
        expect((await store.dump()).has(keys.ipam(n.id, '10.9.0.5'))).toBe(true);
        await store.releaseAddress(n.id, '10.9.0.5', 'h1');
        await store.releaseAddress(n.id, '10.9.0.5', 'h1');
        const left = [...(await store.dump()).keys()].filter((k) => parseKey(k)?.kind === 'ipam');
        expect(left).toEqual([keys.ipam(n.id, '10.9.0.3')]);
        await expectCode(store.reserveAddress(n.id, 'h1', '10.9.0.1'), 'VEIL_ERR_REQUEST_INVALID'); // the gateway
      });
    });

    describe('key epochs, acks and the election', () => {
      const epoch = (networkId: string, e: number, state: KeyEpochRecord['state'] = 'published'): KeyEpochRecord => ({
        networkId,
        epoch: e,
        state,
        publishedAt: 1_700_000_000_000 + e,
        copies: state === 'retired' ? 0 : 1,
      });
      const copyFor = (e: number) => ({ 'host-a': Buffer.from(`wrapped-${e}`).toString('base64') });

      it('the leader writes epochs fenced on its leader key; acks live under the host lease', async () => {
        const n = await store.createNetwork(net('enc', '10.20.0.0/24', { encrypted: true }));
        const host = await store.registerHost(sampleHost('host-a'), 30);
        const election = store.election('keyschedule', 5);
        const leader = await election.campaign('host-a');
        expect(await election.leader()).toBe('host-a');
        expect(leader.lost.aborted).toBe(false);

        await store.putEpoch(leader, epoch(n.id, 1), copyFor(1));
        await store.putEpoch(leader, epoch(n.id, 2), copyFor(2));
        await store.putEpoch(leader, { ...epoch(n.id, 1), state: 'active', activatedAt: 1 });
        const epochs = await store.getEpochs(n.id);
        expect(epochs.items.map((e) => [e.epoch, e.state])).toEqual([
          [1, 'active'],
          [2, 'published'],
        ]);
        expect(await store.getCopy(n.id, 1, 'host-a')).toBe(copyFor(1)['host-a']); // kept by the activation
        expect(await store.getCopy(n.id, 1, 'host-b')).toBeNull();
        expect((await store.listCopies(n.id)).items).toEqual([
          { networkId: n.id, epoch: 1, hostId: 'host-a' },
          { networkId: n.id, epoch: 2, hostId: 'host-a' },
        ]);
        expect([...(await store.dump()).keys()].filter((k) => k.startsWith('election/keyschedule/'))).toHaveLength(1);

        await store.ack(host, { networkId: n.id, epoch: 2, hostId: 'host-a', incarnation: 'i', installedAt: 5 });
        expect((await store.listAcks(n.id, 2)).items).toEqual([
          { networkId: n.id, epoch: 2, hostId: 'host-a', incarnation: 'i', installedAt: 5 },
        ]);
        await expectCode(
          store.ack(host, { networkId: n.id, epoch: 2, hostId: 'host-b', incarnation: 'i', installedAt: 5 }),
          'VEIL_ERR_REQUEST_INVALID',
        );
        await host.revoke(); // the host goes: its acks go with it
        expect((await store.listAcks(n.id, 2)).items).toEqual([]);

        await store.deleteEpoch(leader, n.id, 1);
        expect((await store.getEpochs(n.id)).items.map((e) => e.epoch)).toEqual([2]);
        expect(await store.getCopy(n.id, 1, 'host-a')).toBeNull(); // the copies went with the epoch
        const before = await store.dump();
        await expectCode(
          store.putEpoch(leader, epoch(n.id, 3), { 'host-a': 'not base64!' }),
          'VEIL_ERR_REQUEST_INVALID',
        );
        await expectCode(
          store.putEpoch(leader, { ...epoch(n.id, 2), state: 'retired', copies: 1 }),
          'VEIL_ERR_REQUEST_INVALID',
        );
        await expectCode(
          store.putEpoch(leader, { ...epoch(n.id, 3), wrapped: {} } as KeyEpochRecord),
          'VEIL_ERR_REQUEST_INVALID',
        );
        expect(await store.dump()).toEqual(before);

        await leader.resign();
        expect(leader.lost.aborted).toBe(true);
        await expectCode(store.putEpoch(leader, epoch(n.id, 3)), 'VEIL_ERR_NOT_LEADER');
        expect((await store.getEpochs(n.id)).items.map((e) => e.epoch)).toEqual([2]);
      });

      it('wrapped copies: keys of their own, written before the record, in transactions etcd accepts; gone at retire', async () => {
        const n = await store.createNetwork(net('enc', '10.22.0.0/24', { encrypted: true }));
        const leader = await store.election('keyschedule', 5).campaign('host-a');
        // More copies than one transaction may hold (etcd: --max-txn-ops, 128 by default).
        const members = Array.from({ length: COPIES_PER_TXN * 2 + 7 }, (_, i) => `m${String(i).padStart(3, '0')}`);
        const copies = Object.fromEntries(members.map((m) => [m, Buffer.from(`copy-of-${m}`).toString('base64')]));
        // A publish that never finished (its copies written, not its record) left a copy of epoch 1 behind
        // for a host that is no longer a member.
        await store.putEpoch(leader, epoch(n.id, 1), { stale: Buffer.from('old').toString('base64') });
        await bed.deleteKey(keys.keyEpoch(n.id, 1));
        await store.putEpoch(leader, { ...epoch(n.id, 1), copies: members.length }, copies);
        expect((await store.listCopies(n.id)).items.map((c) => c.hostId)).toEqual(members);
        expect(await store.getCopy(n.id, 1, 'm042')).toBe(copies.m042);
        expect(await store.getCopy(n.id, 1, 'stale')).toBeNull();
        // Retiring deletes the epoch's copies; the record stays.
        await store.putEpoch(leader, { ...epoch(n.id, 1), state: 'retired', retiredAt: 3, copies: 0 });
        expect((await store.listCopies(n.id)).items).toEqual([]);
        expect((await store.getEpochs(n.id)).items.map((r) => [r.epoch, r.state, r.copies])).toEqual([
          [1, 'retired', 0],
        ]);
        // Deleting the network deletes everything of its keys.
        await store.putEpoch(leader, epoch(n.id, 2), copyFor(2));
        await store.deleteNetwork(n.id);
        expect([...(await store.dump()).keys()].filter((k) => k.includes(n.id))).toEqual([]);
      });

      // Counts events: a put that reaches etcd twice is seen twice.
      it.skipIf(impl.sendsTwice)(
        'the shared range leaves the per-member keys out: a watch of it sees records, never copies or acks',
        async () => {
          const n = await store.createNetwork(net('enc', '10.23.0.0/24', { encrypted: true }));
          const host = await store.registerHost(sampleHost('host-a'), 30);
          const leader = await store.election('keyschedule', 5).campaign('host-a');
          const seen: string[] = [];
          const w = await store.watch(SHARED_RANGE, (await store.listNetworks()).revision + 1, {
            onEvents: (events) => seen.push(...events.map((e) => e.key)),
            onResync: () => undefined,
          });
          try {
            await store.putEpoch(leader, epoch(n.id, 1), copyFor(1));
            await store.ack(host, { networkId: n.id, epoch: 1, hostId: 'host-a', incarnation: 'i', installedAt: 1 });
            await store.putEpoch(leader, { ...epoch(n.id, 1), state: 'active', activatedAt: 2 });
            await waitFor('the activation', () => seen.filter((k) => k === keys.keyEpoch(n.id, 1)).length === 2);
            expect(seen.filter((k) => parseKey(k)?.kind !== 'election')).toEqual([
              keys.keyEpoch(n.id, 1),
              keys.keyEpoch(n.id, 1),
            ]);
          } finally {
            await w.cancel();
          }
          expect((await store.dump()).has(keys.copy(n.id, 1, 'host-a'))).toBe(true);
          expect((await store.dump()).has(keys.ack(n.id, 1, 'host-a'))).toBe(true);
        },
      );

      it('a leader whose key is gone is fenced out, is told to stop, and the next candidate takes over', async () => {
        const other = bed.client();
        const e1 = store.election('keyschedule', 5);
        const e2 = other.election('keyschedule', 5);
        const seen: Array<string | undefined> = [];
        const obs = await other.election('keyschedule', 5).observe((l) => seen.push(l));
        const first = await e1.campaign('first');
        const secondP = e2.campaign('second');
        let lostReason: Error | null = null;
        first.onLost((r) => (lostReason = r));

        // The first leader's key vanishes behind its back (its lease expired during a pause).
        const fenceKey = [...(await store.dump()).entries()].find(
          ([k, v]) => k.startsWith('election/keyschedule/') && v === 'first',
        )![0];
        await bed.deleteKey(fenceKey);
        const second = await secondP;
        const netx = await store.createNetwork(net('netx', '10.21.0.0/24', { encrypted: true }));
        await expectCode(store.putEpoch(first, epoch(netx.id, 1)), 'VEIL_ERR_NOT_LEADER');
        expect(first.lost.aborted).toBe(true);
        expect(isStoreError(lostReason, 'VEIL_ERR_NOT_LEADER')).toBe(true);
        await other.putEpoch(second, epoch(netx.id, 1));
        expect((await store.getEpochs(netx.id)).items).toHaveLength(1);
        await waitFor('the observer to see the second leader', () => seen.includes('second'));
        expect(seen[0] === undefined || seen[0] === 'first').toBe(true);
        await obs.cancel();
        await second.resign();
      });

      it('epoch writes are fenced on the network too: a deleted network gets no epoch back (VEIL_ERR_NOT_FOUND) and the leader stays leader', async () => {
        const gone = await store.createNetwork(net('gone', '10.22.0.0/24', { encrypted: true }));
        const kept = await store.createNetwork(net('kept', '10.23.0.0/24', { encrypted: true }));
        const leader = await store.election('keyschedule', 5).campaign('host-a');
        await store.putEpoch(leader, epoch(gone.id, 1));
        await bed.client().deleteNetwork(gone.id); // docker network rm, between the leader's read and its write

        // The leader's next write for it (publish, or a delete) is refused as "network gone", not as "not leader".
        await expectCode(store.putEpoch(leader, epoch(gone.id, 1, 'active')), 'VEIL_ERR_NOT_FOUND');
        await expectCode(store.putEpoch(leader, epoch(gone.id, 2)), 'VEIL_ERR_NOT_FOUND');
        await expectCode(store.deleteEpoch(leader, gone.id, 1), 'VEIL_ERR_NOT_FOUND');
        expect(leader.lost.aborted).toBe(false);
        expect([...(await store.dump()).keys()].filter((k) => k.startsWith(keys.keysPrefix(gone.id)))).toEqual([]);
        // ...and it goes on leading the others.
        await store.putEpoch(leader, epoch(kept.id, 1));
        await store.deleteEpoch(leader, kept.id, 1);
        await store.putEpoch(leader, epoch(kept.id, 2));
        expect((await store.getEpochs(kept.id)).items.map((e) => e.epoch)).toEqual([2]);

        // Leader key gone as well: that is the answer that counts (leadership ends).
        const fenceKey = [...(await store.dump()).entries()].find(
          ([k, v]) => k.startsWith('election/keyschedule/') && v === 'host-a',
        )![0];
        await bed.deleteKey(fenceKey);
        await expectCode(store.putEpoch(leader, epoch(gone.id, 3)), 'VEIL_ERR_NOT_LEADER');
        expect(leader.lost.aborted).toBe(true);
      });

      it('a campaign can be abandoned with an AbortSignal', async () => {
        const held = await store.election('keyschedule', 5).campaign('holder');
        const ctl = new AbortController();
        const p = bed.client().election('keyschedule', 5).campaign('waiter', { signal: ctl.signal });
        setTimeout(() => ctl.abort(new Error('shutting down')), 100);
        await expect(p).rejects.toThrow('shutting down');
        await held.resign();
        await waitFor(
          'the waiter key to be gone',
          async () => ![...(await store.dump()).keys()].some((k) => k.startsWith('election/')),
        );
      });
    });

    describe('watch', () => {
      it('delivers changes after the revision just read, in order, once', async () => {
        await store.createNetwork(net('pre', '10.30.0.0/24'));
        const listing = await store.listNetworks();
        const events: WatchEvent[] = [];
        const w = await store.watch(keys.networksPrefix(), listing.revision + 1, {
          onEvents: (e) => events.push(...e),
          onResync: () => events.push({ type: 'put', key: 'RESYNC', value: null, revision: 0 }),
        });
        const a = await store.createNetwork(net('wa', '10.31.0.0/24'));
        const b = await store.createNetwork(net('wb', '10.32.0.0/24'));
        await store.deleteNetwork(a.id);
        await waitFor('three events', () => events.length >= 3);
        await new Promise((r) => setTimeout(r, 100));
        expect(events.map((e) => [e.type, e.key])).toEqual([
          ['put', keys.network(a.id)],
          ['put', keys.network(b.id)],
          ['delete', keys.network(a.id)],
        ]);
        expect(events[2]!.value).toMatchObject({ name: 'wa' }); // a delete carries the value it removed
        const revs = events.map((e) => e.revision);
        expect([...revs].sort((x, y) => x - y)).toEqual(revs);
        expect(w.lastRevision).toBe(revs[2]);
        await w.cancel();
      });

      it('replays history from an older revision', async () => {
        const r0 = (await store.listEndpoints()).revision;
        const n = await store.createNetwork(net('hist', '10.33.0.0/24'));
        const e = await store.createEndpoint({ networkId: n.id, name: 'c', hostId: 'h' });
        const got: WatchEvent[] = [];
        const w = await store.watch(keys.endpointsPrefix(), r0 + 1, {
          onEvents: (x) => got.push(...x),
          onResync: () => undefined,
        });
        await waitFor('the replayed endpoint', () => got.length >= 1);
        expect(got.map((x) => [x.type, x.key])).toEqual([['put', keys.endpoint(n.id, e.id)]]);
        await w.cancel();
      });

      it('watches of one client from different revisions each get their own events, in order, once', async () => {
        // On etcd these share one watch of the shared layout (docs/etcd.md "Watches"): the second is
        // replayed from what the first already saw, the third skips what it already read.
        const r0 = (await store.listNetworks()).revision;
        const got = { all: [] as string[], networks: [] as string[], late: [] as string[] };
        // Networks and endpoints only: the shared layout also holds their names, VNIs and addresses.
        const shown = (k: string) => k.startsWith(keys.networksPrefix()) || k.startsWith(keys.endpointsPrefix());
        const record = (into: string[]) => ({
          onEvents: (events: WatchEvent[]) =>
            into.push(...events.filter((e) => shown(e.key)).map((e) => `${e.type} ${e.key}`)),
          onResync: () => into.push('RESYNC'),
        });
        const all = await store.watch(SHARED_RANGE, r0 + 1, record(got.all));
        const a = await store.createNetwork(net('sa', '10.43.0.0/24'));
        const e = await store.createEndpoint({ networkId: a.id, name: 'c', hostId: 'h' });
        await waitFor('the first watch saw both', () => got.all.length >= 2);
        const networks = await store.watch(keys.networksPrefix(), r0 + 1, record(got.networks));
        const late = await store.watch(
          keys.networksPrefix(),
          (await store.listNetworks()).revision + 1,
          record(got.late),
        );
        const b = await store.createNetwork(net('sb', '10.44.0.0/24'));
        await waitFor('every watch saw network sb', () =>
          [got.all, got.networks, got.late].every((g) => g.includes(`put ${keys.network(b.id)}`)),
        );
        await new Promise((r) => setTimeout(r, 100));
        expect(got.all).toEqual([
          `put ${keys.network(a.id)}`,
          `put ${keys.endpoint(a.id, e.id)}`,
          `put ${keys.network(b.id)}`,
        ]);
        expect(got.networks).toEqual([`put ${keys.network(a.id)}`, `put ${keys.network(b.id)}`]);
        expect(got.late).toEqual([`put ${keys.network(b.id)}`]);
        for (const w of [all, networks, late]) await w.cancel();
      });

      it('reports a compaction past its revision as a resync with the current state, then continues', async () => {
        const r0 = (await store.listNetworks()).revision;
        const a = await store.createNetwork(net('ca', '10.40.0.0/24'));
        const b = await store.createNetwork(net('cb', '10.41.0.0/24'));
        await store.deleteNetwork(a.id);
        const now = (await store.listNetworks()).revision;
        await bed.compact(now);
        const events: WatchEvent[] = [];
        const resyncs: Array<{ keys: string[]; revision: number }> = [];
        const w = await store.watch(keys.networksPrefix(), r0 + 1, {
          onEvents: (e) => events.push(...e),
          onResync: (snapshot, revision) => resyncs.push({ keys: snapshot.map((s) => s.key), revision }),
        });
        await waitFor('a resync', () => resyncs.length === 1);
        expect(resyncs[0]!.keys).toEqual([keys.network(b.id)]);
        expect(resyncs[0]!.revision).toBeGreaterThanOrEqual(now);
        const c = await store.createNetwork(net('cc', '10.42.0.0/24'));
        await waitFor('the event after the resync', () => events.length >= 1);
        expect(events.map((e) => e.key)).toEqual([keys.network(c.id)]);
        await w.cancel();
      });
    });
  });
}
