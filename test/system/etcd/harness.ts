import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll } from 'vitest';
import { EtcdStore } from '../../../src/store/etcd.js';
import type { StoreImpl } from '../../store/harness.js';
import { startEtcd, type EtcdCluster } from '../support/etcd.js';

/**
 * The Store on a real etcd (one member per test file, a fresh key prefix per test). `answerLostOnce`:
 * every call is sent twice, the first answer dropped (EtcdStoreOptions.answerLostOnce).
 */
export function etcdImpl(options: { answerLostOnce?: boolean } = {}): StoreImpl {
  let cluster: EtcdCluster | null = null;
  return {
    name: options.answerLostOnce ? 'etcd, every call sent twice' : 'etcd',
    sendsTwice: options.answerLostOnce === true,
    async start() {
      cluster = await startEtcd({ members: 1 });
    },
    async stop() {
      await cluster?.stop();
      cluster = null;
    },
    async bed() {
      if (!cluster) throw new Error('etcd not started');
      // A fresh prefix per test: tests share one server but never see each other's keys.
      const prefix = `/t-${randomBytes(4).toString('hex')}/veil/v1/`;
      const endpoints = cluster.endpoints;
      const clients: EtcdStore[] = [];
      const client = (): EtcdStore => {
        const c = new EtcdStore({ endpoints, prefix, ...options });
        clients.push(c);
        return c;
      };
      const store = client();
      return {
        store,
        client,
        compact: (revision) => store.compact(revision),
        async deleteKey(key) {
          await store.client.namespace(prefix).delete().key(key).exec();
        },
        async close() {
          await Promise.all(clients.map((c) => c.close()));
        },
      };
    },
  };
}

/**
 * One etcd member for the calling describe block (started before all, stopped after all), and clients
 * of fresh key prefixes on it: each test its own cluster state. Every client is closed after all.
 */
export function sharedEtcd(): { fresh(): { prefix: string; open(): EtcdStore } } {
  let cluster: EtcdCluster | undefined;
  const stores: EtcdStore[] = [];
  beforeAll(async () => {
    cluster = await startEtcd({ members: 1 });
  });
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
    await cluster?.stop();
  });
  return {
    fresh() {
      const prefix = `/t-${randomBytes(4).toString('hex')}/veil/v1/`;
      return {
        prefix,
        open() {
          if (!cluster) throw new Error('etcd not started');
          const s = new EtcdStore({ endpoints: cluster.endpoints, prefix });
          stores.push(s);
          return s;
        },
      };
    },
  };
}
