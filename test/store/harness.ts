import { randomBytes } from 'node:crypto';
import { MemoryBackend } from '../../src/store/memory.js';
import type { Store } from '../../src/store/types.js';
import { VERSION } from '../../src/model/version.js';

/** One Store implementation under test, with the few knobs tests need beyond the interface. */
export interface StoreBed {
  store: Store;
  /** Another client of the same data (another host or process). */
  client(): Store;
  /** Compacts history up to `revision`. */
  compact(revision: number): Promise<void>;
  /** Deletes a raw key behind the store's back (simulates an expired leader key). */
  deleteKey(key: string): Promise<void>;
  close(): Promise<void>;
}

export interface StoreImpl {
  name: string;
  /** Every call reaches etcd twice (EtcdStoreOptions.answerLostOnce): puts repeat, so watches see them twice. */
  sendsTwice?: boolean;
  /** Starts shared resources (etcd) once per file. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** A fresh, empty bed (etcd: a fresh key prefix on the shared server). */
  bed(): Promise<StoreBed>;
}

export function memoryImpl(): StoreImpl {
  return {
    name: 'memory',
    async start() {},
    async stop() {},
    async bed() {
      const backend = new MemoryBackend();
      const clients: Store[] = [];
      const client = (): Store => {
        const c = backend.client();
        clients.push(c);
        return c;
      };
      return {
        store: client(),
        client,
        async compact(revision) {
          backend.compact(revision);
        },
        async deleteKey(key) {
          backend.commit([{ del: key }]);
        },
        async close() {
          await Promise.all(clients.map((c) => c.close()));
        },
      };
    },
  };
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const sampleHost = (id: string, extra: Partial<{ os: string; incarnation: string; version: string }> = {}) => ({
  id,
  address: '192.0.2.10',
  os: extra.os ?? 'linux',
  arch: 'x64',
  version: extra.version ?? VERSION,
  publicKey: 'ab'.repeat(32),
  incarnation: extra.incarnation ?? randomBytes(8).toString('hex'),
});
