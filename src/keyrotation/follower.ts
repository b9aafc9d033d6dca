import { keys } from '../store/layout.js';
import type { Store, WatchHandle } from '../store/types.js';
import type { EpochInstaller } from './installer.js';
import { errorFields, noLog, sleep, systemClock, type Clock, type LogFn } from './seams.js';

/*
 * Feeds an EpochInstaller from etcd: list the encrypted networks and their epochs,
 * watch keys/ from the revision just read (docs/etcd.md "Watches"), hand every event batch
 * and resync to the installer. Events the installer already has from a listing are
 * dropped by revision, so the start-up race between listing and watching is harmless.
 */

export interface EpochFollowerOptions {
  store: Pick<Store, 'listNetworks' | 'getEpochs' | 'watch'>;
  installer: EpochInstaller;
  log?: LogFn;
  clock?: Clock;
  retryMs?: number;
}

export class EpochFollower {
  readonly #o: EpochFollowerOptions;
  readonly #stop = new AbortController();
  #handle: WatchHandle | null = null;

  constructor(options: EpochFollowerOptions) {
    this.#o = options;
  }

  /** Resolves once the installer has the current epochs of every encrypted network (or on stop). Never rejects. */
  async start(): Promise<void> {
    const { installer } = this.#o;
    const log = this.#o.log ?? noLog;
    while (!this.#stop.signal.aborted) {
      try {
        await this.#connect();
        if (this.#stop.signal.aborted) await this.#handle?.cancel();
        else installer.setStoreReachable(true);
        return;
      } catch (err) {
        await this.#handle?.cancel().catch(() => undefined);
        this.#handle = null;
        installer.setStoreReachable(false, (err as Error).message);
        log('key follower cannot read etcd; retrying', errorFields(err));
        await sleep(this.#o.clock ?? systemClock, this.#o.retryMs ?? 1000, this.#stop.signal);
      }
    }
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#handle?.cancel();
    this.#handle = null;
    await this.#o.installer.idle();
  }

  async #connect(): Promise<void> {
    const { store, installer } = this.#o;
    const networks = await store.listNetworks();
    this.#handle = await store.watch(keys.keysPrefix(), networks.revision + 1, {
      onEvents: (events) => {
        installer.setStoreReachable(true);
        void installer.applyEvents(events);
      },
      onResync: (snapshot, revision) => {
        installer.setStoreReachable(true);
        void installer.applySnapshot(snapshot, revision);
      },
      onDisconnected: (err) => installer.setStoreReachable(false, err.message),
    });
    for (const n of networks.items) {
      if (!n.encrypted || this.#stop.signal.aborted) continue;
      const listing = await store.getEpochs(n.id);
      await installer.sync(n.id, listing.items, listing.revision);
    }
  }
}
