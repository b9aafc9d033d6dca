import { inKeyRange, prefixEnd, type KeyRange } from './layout.js';
import type { WatchEvent, WatchHandle, WatchHandler } from './types.js';

/*
 * One client's watches inside one key range share one watch of it (docs/etcd.md "Watches"): the
 * agent, the key follower, the API's replica and the schedule leader of a host each watch the
 * shared layout or a part of it, so etcd sends and this process decodes each event once per host,
 * not once per consumer.
 *
 * A subscriber keeps the contract of a watch of its own: its events start at its own revision,
 * in order, each once. Delivered events are kept for KEPT_MS (at most KEPT_EVENTS of them), so a
 * later subscriber that asks for a revision still kept is replayed from memory; one asking for an
 * older revision gets no subscription (the caller opens a watch of its own). A subscriber's first
 * events reach it after watch() has returned, as they would from etcd.
 */

/**
 * Delivered events kept for replay, at most this many and for this long: a consumer reads its listing
 * and subscribes within moments. Kept longer, a host would hold every event it ever saw.
 */
export const KEPT_EVENTS = 1024;
export const KEPT_MS = 10_000;

/** Opens the one underlying watch (for EtcdStore: a watch of its own on the range, from `fromRevision`). */
export type OpenWatch = (fromRevision: number, handler: WatchHandler) => WatchHandle;

/** A key range as byte bounds: [start, end). A prefix's end is the first key after every key it starts. */
function bounds(range: KeyRange): { start: Buffer; end: Buffer } {
  if (typeof range === 'string') {
    const start = Buffer.from(range);
    return { start, end: prefixEnd(start) };
  }
  return { start: Buffer.from(range.start), end: Buffer.from(range.end) };
}

/** True when every key of `inner` lies in `outer`. An empty prefix is the whole keyspace. */
export function rangeWithin(inner: KeyRange, outer: KeyRange): boolean {
  if (inner === '') return outer === '';
  const i = bounds(inner);
  const o = bounds(outer);
  const wholeSpace = (end: Buffer) => end.length === 1 && end[0] === 0;
  if (wholeSpace(o.end)) return Buffer.compare(i.start, o.start) >= 0;
  return Buffer.compare(i.start, o.start) >= 0 && !wholeSpace(i.end) && Buffer.compare(i.end, o.end) <= 0;
}

export class SharedWatch {
  readonly #subscribers = new Set<Subscription>();
  #stream: WatchHandle | null = null;
  /** Delivered events with when they came, oldest first; every event after `#keptAfter` is here. */
  #kept: Array<{ at: number; event: WatchEvent }> = [];
  #keptAfter = 0;
  /** Set while the underlying watch is detached: a new subscriber hears it first. */
  #down: Error | null = null;
  #generation = 0;

  constructor(
    readonly range: KeyRange,
    private readonly open: OpenWatch,
    private readonly now: () => number = Date.now,
  ) {}

  /** Subscribers now (what consumers hold), and whether the one underlying watch is open. */
  get subscribers(): number {
    return this.#subscribers.size;
  }
  get streaming(): boolean {
    return this.#stream !== null;
  }

  /** A subscription of `range` (inside this.range) from `fromRevision`, or null when that revision is no longer kept. */
  subscribe(range: KeyRange, fromRevision: number, handler: WatchHandler): WatchHandle | null {
    if (this.#stream === null) {
      this.#kept = [];
      this.#keptAfter = fromRevision - 1;
      this.#down = null;
      // What a cancelled watch still says is not for the subscribers of the next one.
      const generation = ++this.#generation;
      const live = () => generation === this.#generation;
      this.#stream = this.open(fromRevision, {
        onEvents: (events) => live() && this.#deliver(events),
        onResync: (snapshot, revision) => live() && this.#resync(snapshot, revision),
        onDisconnected: (err) => {
          if (!live()) return;
          this.#down = err;
          for (const s of this.#subscribers) s.disconnected(err);
        },
        onReconnected: () => {
          if (!live()) return;
          this.#down = null;
          for (const s of this.#subscribers) s.reconnected();
        },
      });
    } else {
      this.#trim();
      if (fromRevision - 1 < this.#keptAfter) return null;
    }
    const sub: Subscription = new Subscription(range === this.range ? null : range, fromRevision - 1, handler, () =>
      this.#leave(sub),
    );
    this.#subscribers.add(sub);
    if (this.#down) sub.disconnected(this.#down);
    sub.deliver(this.#kept.map((k) => k.event));
    setImmediate(() => sub.flush());
    return sub;
  }

  #deliver(events: WatchEvent[]): void {
    for (const s of this.#subscribers) s.deliver(events);
    const at = this.now();
    for (const event of events) this.#kept.push({ at, event });
    this.#trim();
  }

  /** Lets go of events past KEPT_MS and beyond KEPT_EVENTS; their revisions can no longer be replayed. */
  #trim(): void {
    const since = this.now() - KEPT_MS;
    let drop = Math.max(0, this.#kept.length - KEPT_EVENTS);
    while (drop < this.#kept.length && this.#kept[drop]!.at < since) drop++;
    if (drop === 0) return;
    this.#keptAfter = this.#kept[drop - 1]!.event.revision;
    this.#kept = this.#kept.slice(drop);
  }

  #resync(snapshot: Array<{ key: string; value: unknown }>, revision: number): void {
    this.#kept = [];
    this.#keptAfter = revision;
    for (const s of this.#subscribers) s.resync(snapshot, revision);
  }

  async #leave(sub: Subscription): Promise<void> {
    if (!this.#subscribers.delete(sub) || this.#subscribers.size > 0) return;
    const stream = this.#stream;
    this.#stream = null;
    this.#generation++;
    this.#kept = [];
    await stream?.cancel();
  }

  /** Ends every subscription and the underlying watch (the client closes). */
  async close(): Promise<void> {
    await Promise.all([...this.#subscribers].map((s) => s.cancel()));
  }
}

/** One consumer's view: its range, from its revision; what it is due waits while the replay is pending. */
class Subscription implements WatchHandle {
  #floor: number;
  #cancelled = false;
  /** Deliveries waiting for the first flush (after watch() returned), in order; null once flushed. */
  #pending: Array<() => void> | null = [];
  readonly #covers: (key: string) => boolean;

  constructor(
    range: KeyRange | null,
    floor: number,
    private readonly handler: WatchHandler,
    private readonly onCancel: () => Promise<void>,
  ) {
    this.#floor = floor;
    this.#covers = range === null ? () => true : (key) => inKeyRange(range, key);
  }

  get lastRevision(): number {
    return this.#floor;
  }

  #run(step: () => void): void {
    if (this.#cancelled) return;
    if (this.#pending) this.#pending.push(step);
    else step();
  }

  flush(): void {
    const steps = this.#pending ?? [];
    this.#pending = null;
    for (const step of steps) if (!this.#cancelled) step();
  }

  deliver(events: WatchEvent[]): void {
    const floor = this.#floor;
    const mine = events.filter((e) => e.revision > floor && this.#covers(e.key));
    if (mine.length === 0) return;
    this.#floor = mine[mine.length - 1]!.revision;
    this.#run(() => this.handler.onEvents(mine));
  }

  resync(snapshot: Array<{ key: string; value: unknown }>, revision: number): void {
    const mine = snapshot.filter((kv) => this.#covers(kv.key));
    this.#floor = revision;
    this.#run(() => this.handler.onResync(mine, revision));
  }

  disconnected(err: Error): void {
    this.#run(() => this.handler.onDisconnected?.(err));
  }

  reconnected(): void {
    this.#run(() => this.handler.onReconnected?.());
  }

  async cancel(): Promise<void> {
    if (this.#cancelled) return;
    this.#cancelled = true;
    this.#pending = null;
    await this.onCancel();
  }
}
