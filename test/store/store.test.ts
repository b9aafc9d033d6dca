import { describe, expect, it } from 'vitest';
import { MemoryBackend } from '../../src/store/memory.js';
import { keys } from '../../src/store/layout.js';
import { memoryImpl, waitFor } from './harness.js';
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
