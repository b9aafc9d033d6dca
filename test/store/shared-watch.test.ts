// SharedWatch (docs/etcd.md "Watches"): one underlying watch, each subscriber with the contract of its own.
import { describe, expect, it } from 'vitest';
import { SHARED_RANGE } from '../../src/store/layout.js';
import { KEPT_EVENTS, KEPT_MS, SharedWatch, rangeWithin } from '../../src/store/shared-watch.js';
import type { WatchEvent, WatchHandle, WatchHandler } from '../../src/store/types.js';

/** The underlying watch, driven by hand: what was opened, from where, and whether it was cancelled. */
function underlying() {
  const opened: Array<{ from: number; handler: WatchHandler; cancelled: boolean }> = [];
  const open = (from: number, handler: WatchHandler): WatchHandle => {
    const o = { from, handler, cancelled: false };
    opened.push(o);
    return {
      lastRevision: from - 1,
      cancel: async () => {
        o.cancelled = true;
      },
    };
  };
  return { opened, open, current: () => opened[opened.length - 1]! };
}

/** A subscriber's record of what reached it, in order. */
function recorder() {
  const got: string[] = [];
  const handler: WatchHandler = {
    onEvents: (events) => got.push(...events.map((e) => `${e.revision}:${e.key}`)),
    onResync: (snapshot, revision) => got.push(`resync@${revision}:${snapshot.map((s) => s.key).join(',')}`),
    onDisconnected: (err) => got.push(`down:${err.message}`),
    onReconnected: () => got.push('up'),
  };
  return { got, handler };
}

const put = (revision: number, key: string): WatchEvent => ({ type: 'put', key, value: { revision }, revision });
const turn = () => new Promise((r) => setImmediate(r));

describe('SharedWatch', () => {
  it('opens one watch for every subscriber and gives each the events of its range only', async () => {
    const u = underlying();
    const shared = new SharedWatch(SHARED_RANGE, u.open);
    const all = recorder();
    const keys = recorder();
    shared.subscribe(SHARED_RANGE, 10, all.handler);
    shared.subscribe('keys/', 10, keys.handler);
    expect(u.opened).toHaveLength(1);
    expect(u.opened[0]!.from).toBe(10);
    await turn();
    u.current().handler.onEvents([put(10, 'networks/a'), put(11, 'keys/a/1')]);
    u.current().handler.onEvents([put(12, 'hosts/h')]);
    expect(all.got).toEqual(['10:networks/a', '11:keys/a/1', '12:hosts/h']);
    expect(keys.got).toEqual(['11:keys/a/1']);
    expect(shared.subscribers).toBe(2);
  });

  it('replays kept events to a later subscriber from its revision, after watch() returned, then live ones in order', async () => {
    const u = underlying();
    const shared = new SharedWatch(SHARED_RANGE, u.open);
    shared.subscribe(SHARED_RANGE, 5, recorder().handler);
    u.current().handler.onEvents([put(5, 'networks/a'), put(7, 'networks/b'), put(9, 'networks/c')]);
    const late = recorder();
    const sub = shared.subscribe('networks/', 7, late.handler);
    expect(sub).not.toBeNull();
    expect(late.got).toEqual([]); // nothing before the caller holds its handle
    u.current().handler.onEvents([put(10, 'networks/d')]);
    expect(late.got).toEqual([]);
    await turn();
    expect(late.got).toEqual(['7:networks/b', '9:networks/c', '10:networks/d']);
    expect(sub!.lastRevision).toBe(10);
  });

  it('skips what a subscriber already read: events at or below its start revision', async () => {
    const u = underlying();
    const shared = new SharedWatch(SHARED_RANGE, u.open);
    shared.subscribe(SHARED_RANGE, 1, recorder().handler);
    const ahead = recorder();
    shared.subscribe(SHARED_RANGE, 20, ahead.handler);
    await turn();
    u.current().handler.onEvents([put(18, 'a'), put(19, 'b')]);
    u.current().handler.onEvents([put(20, 'c')]);
    expect(ahead.got).toEqual(['20:c']);
  });

  it('refuses a revision older than what it keeps, so the caller opens a watch of its own', () => {
    const u = underlying();
    const shared = new SharedWatch(SHARED_RANGE, u.open);
    shared.subscribe(SHARED_RANGE, 100, recorder().handler);
    expect(shared.subscribe(SHARED_RANGE, 99, recorder().handler)).toBeNull();
    const events = Array.from({ length: KEPT_EVENTS + 10 }, (_, i) => put(100 + i, `k${i}`));
    u.current().handler.onEvents(events);
    // The ten oldest were let go: their revisions can no longer be replayed, the next can.
    expect(shared.subscribe(SHARED_RANGE, 109, recorder().handler)).toBeNull();
    expect(shared.subscribe(SHARED_RANGE, 110, recorder().handler)).not.toBeNull();
    expect(u.opened).toHaveLength(1);
  });

  it('keeps events for KEPT_MS only: a host does not hold every event it ever saw', () => {
    const u = underlying();
    let now = 0;
    const shared = new SharedWatch(SHARED_RANGE, u.open, () => now);
    shared.subscribe(SHARED_RANGE, 1, recorder().handler);
    u.current().handler.onEvents([put(1, 'a'), put(2, 'b')]);
    now = KEPT_MS / 2;
    u.current().handler.onEvents([put(3, 'c')]);
    expect(shared.subscribe(SHARED_RANGE, 1, recorder().handler)).not.toBeNull();
    now = KEPT_MS + 1;
    expect(shared.subscribe(SHARED_RANGE, 2, recorder().handler)).toBeNull();
    expect(shared.subscribe(SHARED_RANGE, 3, recorder().handler)).not.toBeNull();
    now = 2 * KEPT_MS;
    expect(shared.subscribe(SHARED_RANGE, 3, recorder().handler)).toBeNull();
    expect(shared.subscribe(SHARED_RANGE, 4, recorder().handler)).not.toBeNull();
  });

  it('hands each subscriber its part of a resync, and replays nothing from before it', async () => {
    const u = underlying();
    const shared = new SharedWatch(SHARED_RANGE, u.open);
    const all = recorder();
    const keys = recorder();
    shared.subscribe(SHARED_RANGE, 1, all.handler);
    shared.subscribe('keys/', 1, keys.handler);
    await turn();
    u.current().handler.onEvents([put(1, 'networks/a')]);
    u.current().handler.onResync(
      [
        { key: 'keys/a/1', value: {} },
        { key: 'networks/b', value: {} },
      ],
      50,
    );
    expect(all.got).toEqual(['1:networks/a', 'resync@50:keys/a/1,networks/b']);
    expect(keys.got).toEqual(['resync@50:keys/a/1']);
    expect(shared.subscribe(SHARED_RANGE, 40, recorder().handler)).toBeNull();
    expect(shared.subscribe(SHARED_RANGE, 51, recorder().handler)).not.toBeNull();
  });

  it('tells every subscriber when the watch detaches and attaches, and a new one that it is detached', async () => {
    const u = underlying();
    const shared = new SharedWatch(SHARED_RANGE, u.open);
    const first = recorder();
    shared.subscribe(SHARED_RANGE, 1, first.handler);
    await turn();
    u.current().handler.onDisconnected!(new Error('etcd gone'));
    const second = recorder();
    shared.subscribe('hosts/', 1, second.handler);
    await turn();
    u.current().handler.onReconnected!();
    expect(first.got).toEqual(['down:etcd gone', 'up']);
    expect(second.got).toEqual(['down:etcd gone', 'up']);
  });

  it('cancels the underlying watch with its last subscriber, and opens a new one for the next', async () => {
    const u = underlying();
    const shared = new SharedWatch(SHARED_RANGE, u.open);
    const a = shared.subscribe(SHARED_RANGE, 3, recorder().handler)!;
    const gone = recorder();
    const b = shared.subscribe('keys/', 3, gone.handler)!;
    await turn();
    await a.cancel();
    expect(u.opened[0]!.cancelled).toBe(false);
    await b.cancel();
    expect(u.opened[0]!.cancelled).toBe(true);
    expect(shared.streaming).toBe(false);
    const next = recorder();
    shared.subscribe(SHARED_RANGE, 8, next.handler);
    expect(u.opened).toHaveLength(2);
    expect(u.opened[1]!.from).toBe(8);
    await turn();
    u.opened[0]!.handler.onEvents([put(9, 'keys/x')]); // late, from the cancelled watch
    u.opened[1]!.handler.onEvents([put(10, 'keys/y')]);
    expect(gone.got).toEqual([]);
    expect(next.got).toEqual(['10:keys/y']);
  });

  it('says which ranges lie inside another', () => {
    expect(rangeWithin('keys/', SHARED_RANGE)).toBe(true);
    expect(rangeWithin('keys/net1/', SHARED_RANGE)).toBe(true);
    expect(rangeWithin(SHARED_RANGE, SHARED_RANGE)).toBe(true);
    expect(rangeWithin('~/acks/', SHARED_RANGE)).toBe(false);
    expect(rangeWithin('~', SHARED_RANGE)).toBe(false);
    expect(rangeWithin('', SHARED_RANGE)).toBe(false);
    expect(rangeWithin({ start: 'a', end: 'z' }, SHARED_RANGE)).toBe(true);
    expect(rangeWithin({ start: 'a', end: '~~' }, SHARED_RANGE)).toBe(false);
  });
});
