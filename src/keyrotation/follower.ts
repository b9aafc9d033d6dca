import { keys } from '../store/layout.js';
import type { Store, WatchHandle } from '../store/types.js';
import type { EpochInstaller } from './installer.js';
import { errorFields, noLog, sleep, systemClock, type Clock, type LogFn } from './seams.js';

/*
 * Feeds an EpochInstaller from etcd: list the encrypted networks and their epochs,
 * watch keys/ from the revision just read (docs/etcd.md "Watches"), hand every event batch
 * and resync to the installer, in etcd revision order. The watch starts before the epoch
 * listings are read, so an event can arrive before a listing read at an older revision:
 * events are held until the listings are in, then handed over (the installer drops those
 * a listing already holds, by revision). Applied the other way round, the older listing
 * would undo the event, and a network could stay without its outbound epoch until the
 * next rotation.
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
    // Until the listings are in, what the watch says waits here, in the order it came.
    let held: Array<() => Promise<void>> | null = [];
    const deliver = (step: () => Promise<void>): void => {
      installer.setStoreReachable(true);
      if (held) held.push(step);
      else void step();
    };
    this.#handle = await store.watch(keys.keysPrefix(), networks.revision + 1, {
      onEvents: (events) => deliver(() => installer.applyEvents(events)),
      onResync: (snapshot, revision) => deliver(() => installer.applySnapshot(snapshot, revision)),
      onDisconnected: (err) => installer.setStoreReachable(false, err.message),
      // Nothing may change under keys/ for hours: a reattached watch is the news that etcd is back.
      onReconnected: () => installer.setStoreReachable(true),
    });
    try {
      for (const n of networks.items) {
        if (!n.encrypted || this.#stop.signal.aborted) continue;
        const listing = await store.getEpochs(n.id);
        await installer.sync(n.id, listing.items, listing.revision);
      }
    } finally {
      // Handed over in one go, before anything newer can come in: the installer applies in call order.
      const steps = held;
      held = null;
      for (const step of steps) void step();
    }
    await installer.idle();
  }
}
