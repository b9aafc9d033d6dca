import { describe, expect, it, vi } from 'vitest';
import { MemoryRotationRequests, requestRotation } from '../../../src/keyrotation/requests.js';
import type { EtcdStore } from '../../../src/store/etcd.js';
import { keys } from '../../../src/store/layout.js';
import type { KeyEpochRecord, NetworkRecord, Store } from '../../../src/store/types.js';
import { sharedEtcd } from './harness.js';
import { secretSpellings, startHost, startLeader, waitFor, type SimHost } from '../../keyrotation/harness.js';

/*
 * The forced rotation on a real etcd 3.4 (one member on loopback): three simulated
 * hosts, each with its own etcd client, the leader on one of them. Afterwards every
 * key and value in etcd is scanned for the epoch secrets the hosts unwrapped.
 */

describe('key rotation on a real etcd', () => {
  const etcd = sharedEtcd();
  /** Clients of one fresh key prefix on the shared etcd (each test its own cluster state), closed after all. */
  const freshPrefix = (): (() => EtcdStore) => etcd.fresh().open;

  it('forced rotation with three hosts: the standby published and acked ahead → activate → retire → delete; etcd never holds a usable key', async () => {
    const open = freshPrefix();
    const admin = open();
    const n: NetworkRecord = await admin.createNetwork({
      name: 'secure',
      encrypted: true,
      ipam: { subnet: '10.88.0.0/24' },
    });
    const hosts: SimHost[] = [];
    for (const id of ['h1', 'h2', 'h3']) hosts.push(await startHost(open(), id, { ttlSeconds: 10 }));
    const [h1, h2, h3] = hosts as [SimHost, SimHost, SimHost];
    const requests = new MemoryRotationRequests();
    const { leader, logs } = startLeader(h1, requests, {
      config: { ackTimeoutMs: 20_000, graceMs: 300, retiredLingerMs: 300 },
    });
    const epochs = async (s: Store): Promise<KeyEpochRecord[]> => (await s.getEpochs(n.id)).items;
    const everywhere = (epoch: number) => hosts.every((h) => h.sink.outbound.get(n.id) === epoch);

    try {
      await waitFor('epoch 1 active on every host', () => everywhere(1), 20_000);
      // The next epoch waits installed everywhere (the standby); the rotation activates it.
      await waitFor('standby 2 acked by every host', async () => (await admin.listAcks(n.id, 2)).items.length === 3);
      await requestRotation({ store: h2.store, requests }, n.id, 'h2');
      await waitFor('epoch 2 active on every host', () => everywhere(2), 20_000);
      await waitFor(
        'epoch 1 deleted, 3 the standby',
        async () => (await epochs(admin)).map((r) => `${r.epoch}:${r.state}`).join() === '2:active,3:published',
        20_000,
      );

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
      expect(leader.status().networks[0]).toMatchObject({ ackTimeouts: 0, problem: null });
      const secrets = [1, 2].map((e) => h1.sink.secret(n.id, e)!);
      expect(new Set(secrets).size).toBe(2);
      for (const h of [h2, h3]) expect([1, 2].map((e) => h.sink.secret(n.id, e))).toEqual(secrets);

      // Every key and value under the prefix: wrapped copies only, never a secret in any spelling.
      const dump = await admin.dump();
      expect(dump.has(keys.keyEpoch(n.id, 2))).toBe(true);
      expect([...dump.keys()].some((k) => k.startsWith(keys.acksPrefix(n.id, 1)))).toBe(false);
      const blob = [...dump].map(([k, v]) => `${k}=${v}`).join('\n');
      for (const s of secrets) for (const spelled of secretSpellings(s)) expect(blob).not.toContain(spelled);
      const logText = JSON.stringify(logs) + JSON.stringify(hosts.map((h) => h.logs));
      for (const s of secrets) for (const spelled of secretSpellings(s)) expect(logText).not.toContain(spelled);
    } finally {
      await leader.stop();
      for (const h of hosts) await h.stop({ leave: true });
    }
  });

  it('a leader that gives up its term on its own (an event-loop stall past 2/3 TTL) resigns it: another candidate is elected within seconds and rotation goes on', async () => {
    const open = freshPrefix();
    const admin = open();
    const n: NetworkRecord = await admin.createNetwork({
      name: 'secure',
      encrypted: true,
      ipam: { subnet: '10.89.0.0/24' },
    });
    const hosts: SimHost[] = [];
    for (const id of ['h1', 'h2']) hosts.push(await startHost(open(), id, { ttlSeconds: 10 }));
    const [h1, h2] = hosts as [SimHost, SimHost];
    const requests = new MemoryRotationRequests();
    const first = startLeader(h1, requests, { electionTtlSeconds: 3 });
    const everywhere = (epoch: number) => hosts.every((h) => h.sink.outbound.get(n.id) === epoch);
    let second: ReturnType<typeof startLeader> | null = null;
    const realNow = Date.now.bind(Date);
    const stall = vi.spyOn(Date, 'now');
    try {
      await waitFor('epoch 1 active on every host', () => everywhere(1), 20_000);
      second = startLeader(h2, requests, { electionTtlSeconds: 3 });
      await new Promise((r) => setTimeout(r, 500));
      expect([first.leader.isLeader, second.leader.isLeader]).toEqual([true, false]);

      // The leader's clock jumps past 2/3 of the TTL since it last confirmed its key (what a stalled
      // event loop looks like to it); etcd3's keepalives run on timers and keep its lease alive.
      stall.mockImplementation(() => realNow() + 5000);
      await waitFor('the first leader to give up its term', () => !first.leader.isLeader, 5000);
      expect(first.logs.some((l) => l.event.startsWith('key schedule leadership lost'))).toBe(true);
      const lostAt = Date.now();
      await waitFor('the other candidate to be elected', () => second!.leader.isLeader, 5000);
      expect(Date.now() - lostAt).toBeLessThan(4000);

      await requestRotation({ store: admin, requests }, n.id, 'api:test');
      await waitFor('epoch 2 active on every host', () => everywhere(2), 20_000);
    } finally {
      stall.mockRestore();
      await first.leader.stop();
      await second?.leader.stop();
      for (const h of hosts) await h.stop({ leave: true });
    }
  });
});
