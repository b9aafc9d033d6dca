import { randomBytes } from 'node:crypto';
import { EtcdStore } from '../../../src/store/etcd.js';
import type { StoreImpl } from '../../store/harness.js';
import { startEtcd, type EtcdCluster } from '../support/etcd.js';

/** The Store on a real etcd (one member per test file, a fresh key prefix per test). */
export function etcdImpl(): StoreImpl {
  let cluster: EtcdCluster | null = null;
  return {
    name: 'etcd',
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
        const c = new EtcdStore({ endpoints, prefix });
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
