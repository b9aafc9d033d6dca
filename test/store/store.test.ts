import { describe, expect, it } from 'vitest';
import { MemoryBackend } from '../../src/store/memory.js';
import { keys } from '../../src/store/layout.js';
import { memoryImpl, sampleHost, waitFor } from './harness.js';
import { describeStore } from './store-suite.js';

describeStore(memoryImpl());

describe('MemoryStore watch delay', () => {
  it("a client's watches deliver each change after its own delay, in order; other clients are not held back", async () => {
    const backend = new MemoryBackend();
    const writer = backend.client();
    const fast = backend.client();
    const slow = backend.client({ watchDelayMs: 40 });
    const seen: Array<[string, string, number]> = [];
    const start = Date.now();
    const watch = (name: string, store: typeof fast) =>
      store.watch(keys.networksPrefix(), backend.revision + 1, {
        onEvents: (events) => events.forEach((e) => seen.push([name, e.key, Date.now() - start])),
        onResync: () => undefined,
      });
    await watch('fast', fast);
    await watch('slow', slow);
    const madeA = Date.now() - start;
    await writer.createNetwork({ name: 'a', ipam: { subnet: '10.1.0.0/24' } });
    await new Promise((r) => setTimeout(r, 20));
    const madeB = Date.now() - start;
    await writer.createNetwork({ name: 'b', ipam: { subnet: '10.2.0.0/24' } });
    await waitFor('both clients to see both networks', () => seen.length === 4);
    const at = (name: string) => seen.filter(([n]) => n === name);
    expect(at('slow').map(([, key]) => key)).toEqual(at('fast').map(([, key]) => key));
    const [slowA, slowB] = at('slow').map(([, , ms]) => ms);
    // Each change 40 ms after it was made (timers may round down by a millisecond), none earlier.
    expect(slowA! - madeA).toBeGreaterThanOrEqual(38);
    expect(slowB! - madeB).toBeGreaterThanOrEqual(38);
    expect(at('fast')[0]![2]).toBeLessThan(slowA!);
    await Promise.all([writer.close(), fast.close(), slow.close()]);
  });
});

describe('MemoryStore cut off from etcd', () => {
  it('rejects every call, holds its watches and lets its leases expire; reconnected, it gets what it missed and keeps the leases still alive', async () => {
    const backend = new MemoryBackend();
    const other = backend.client();
    const cut = backend.client();
    const seen: string[] = [];
    const disconnects: string[] = [];
    let reconnects = 0;
    await cut.watch(keys.networksPrefix(), backend.revision + 1, {
      onEvents: (events) => events.forEach((e) => seen.push(e.key)),
      onResync: () => undefined,
      onDisconnected: (err) => disconnects.push(err.message),
      onReconnected: () => reconnects++,
    });
    const short = await cut.registerHost(sampleHost('short'), 1);
    await cut.registerHost(sampleHost('long'), 30);

    cut.setReachable(false);
    expect(disconnects).toEqual([expect.stringMatching(/etcd unreachable/)]);
    await expect(cut.listHosts()).rejects.toMatchObject({ code: 'VEIL_ERR_STORE_UNAVAILABLE' });
    await expect(short.revoke()).rejects.toMatchObject({ code: 'VEIL_ERR_STORE_UNAVAILABLE' });
    await other.createNetwork({ name: 'a', ipam: { subnet: '10.1.0.0/24' } });
    await waitFor('the short lease to expire', async () =>
      (await other.listHosts()).items.every((h) => h.id !== 'short'),
    );
    expect(short.lost.aborted).toBe(true);
    expect(seen).toEqual([]);

    expect(reconnects).toBe(0);
    cut.setReachable(true);
    expect(reconnects).toBe(1);
    await waitFor('the held event', () => seen.length === 1);
    expect(seen[0]).toMatch(/^networks\//);
    expect((await cut.listHosts()).items.map((h) => h.id)).toEqual(['long']);
    await new Promise((r) => setTimeout(r, 1100)); // past the TTL the long lease was cut off for
    expect((await other.listHosts()).items.map((h) => h.id)).toEqual(['long']);
    await Promise.all([other.close(), cut.close()]);
  });
});
