import type { EndpointRecord, Store } from '../store/types.js';

/*
 * Endpoints a CNI runtime made on this host whose container vanished without a DEL (docs/cni.md
 * "Cleanup"): a runtime killed between ADD and DEL, a node rebooted. Their namespace file is gone;
 * once it has been gone at two sweeps in a row, the record goes, and with it the address (the
 * agent then removes what is left of the port). Only runtime endpoints: Docker's are Docker's to
 * delete, and a CLI-attached container is the operator's.
 */
/** The default sweep period: an orphan goes within two of them. */
export const RUNTIME_SWEEP_MS = 30_000;

export class RuntimeReaper {
  readonly #store: Store;
  readonly #endpoints: () => Promise<readonly EndpointRecord[]>;
  readonly #hostId: string;
  readonly #exists: (path: string) => boolean;
  readonly #log: (event: string, fields: Record<string, unknown>) => void;
  /** Endpoint ids whose namespace was missing at the last sweep. */
  #missing = new Set<string>();

  constructor(options: {
    store: Store;
    /**
     * Where to look: the agent's watched endpoints, so that a sweep on every host is no read of etcd
     * (default: the store's list). Deletes go to the store.
     */
    endpoints?: () => readonly EndpointRecord[];
    hostId: string;
    exists: (path: string) => boolean;
    log: (event: string, fields: Record<string, unknown>) => void;
  }) {
    this.#store = options.store;
    const watched = options.endpoints;
    this.#endpoints = watched ? async () => watched() : async () => (await options.store.listEndpoints()).items;
    this.#hostId = options.hostId;
    this.#exists = options.exists;
    this.#log = options.log;
  }

  #busy = false;

  /** One sweep; returns the endpoints removed. A sweep asked while one runs does nothing (it is no second look). */
  async sweep(): Promise<EndpointRecord[]> {
    if (this.#busy) return [];
    this.#busy = true;
    try {
      return await this.#sweep();
    } finally {
      this.#busy = false;
    }
  }

  async #sweep(): Promise<EndpointRecord[]> {
    const gone = (await this.#endpoints()).filter(
      (e) =>
        e.hostId === this.#hostId &&
        e.runtime !== undefined &&
        e.sandbox !== undefined &&
        'netns' in e.sandbox &&
        !this.#exists(e.sandbox.netns),
    );
    const removed: EndpointRecord[] = [];
    for (const e of gone) {
      if (!this.#missing.has(e.id)) continue;
      try {
        await this.#store.deleteEndpoint(e.networkId, e.id);
      } catch (err) {
        if ((err as { code?: string }).code !== 'VEIL_ERR_NOT_FOUND') throw err;
        continue; // its DEL came after all
      }
      this.#log('runtime endpoint removed', {
        endpoint: e.name,
        container: e.runtime!.containerId,
        ipv4: e.ipv4,
        reason: 'its namespace is gone and no DEL came',
      });
      removed.push(e);
    }
    this.#missing = new Set(gone.filter((e) => !removed.includes(e)).map((e) => e.id));
    return removed;
  }
}
