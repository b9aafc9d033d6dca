import { isStoreError } from '../store/errors.js';
import type { NetworkRecord } from '../store/types.js';

/*
 * Status routes must answer exactly when the control plane is down ("rotation waits for etcd",
 * "is my traffic still encrypted?"). Each keeps the last answer it read from etcd per network, by id
 * and by name, and falls back to it when etcd is unreachable; any other error still propagates.
 */

export const isoTime = (ms: number | undefined | null): string | null =>
  ms === undefined || ms === null ? null : new Date(ms).toISOString();
export const nullableString = { type: ['string', 'null'] } as const;

export class LastRead<T extends { network: NetworkRecord }> {
  readonly #byRef = new Map<string, T>();

  /** `read()` from etcd, remembered; when etcd is unreachable, the last value for `ref` with the error's message. */
  async get(ref: string, read: () => Promise<T>): Promise<{ value: T; storeError: string | null }> {
    try {
      const value = await read();
      this.#byRef.set(value.network.id, value);
      this.#byRef.set(value.network.name, value);
      return { value, storeError: null };
    } catch (err) {
      const cached = this.#byRef.get(ref);
      if (!isStoreError(err, 'VEIL_ERR_STORE_UNAVAILABLE') || !cached) throw err;
      return { value: cached, storeError: err.message };
    }
  }
}
