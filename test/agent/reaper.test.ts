import { describe, expect, it } from 'vitest';
import { RuntimeReaper } from '../../src/agent/reaper.js';
import { MemoryStore } from '../../src/store/memory.js';

// docs/cni.md "Cleanup": a CNI endpoint of this host whose namespace is gone at two sweeps in a row
// goes, with its address; nothing else does.
describe('RuntimeReaper', () => {
  it('removes a runtime endpoint of this host once its namespace is gone at two sweeps, and nothing else', async () => {
    const store = new MemoryStore();
    const net = await store.createNetwork({ name: 'pods', ipam: { subnet: '10.9.0.0/24' } });
    const present = new Set(['/run/netns/alive', '/run/netns/back']);
    const ep = (name: string, hostId: string, netns: string, cni: boolean) =>
      store.createEndpoint({
        networkId: net.id,
        name,
        hostId,
        sandbox: { netns },
        ...(cni ? { runtime: { kind: 'cni' as const, containerId: `c-${name}` } } : {}),
      });
    const orphan = await ep('orphan', 'h1', '/run/netns/gone', true);
    await ep('alive', 'h1', '/run/netns/alive', true);
    await ep('cli', 'h1', '/run/netns/cli-gone', false); // the operator's: not the reaper's
    await ep('elsewhere', 'h2', '/run/netns/gone', true); // another host's namespace is not visible here
    const back = await ep('back', 'h1', '/run/netns/back', true);
    const logged: Array<Record<string, unknown>> = [];
    const reaper = new RuntimeReaper({
      store,
      hostId: 'h1',
      exists: (p) => present.has(p),
      log: (_event, fields) => logged.push(fields),
    });
    present.delete('/run/netns/back');
    expect(await reaper.sweep()).toEqual([]); // gone once: maybe a moment's race, wait
    present.add('/run/netns/back'); // it came back: not an orphan
    const removed = await reaper.sweep();
    expect(removed.map((e) => e.name)).toEqual(['orphan']);
    expect(logged).toEqual([
      { endpoint: 'orphan', container: 'c-orphan', ipv4: orphan.ipv4, reason: 'its namespace is gone and no DEL came' },
    ]);
    const left = (await store.listEndpoints(net.id)).items.map((e) => e.name).sort();
    expect(left).toEqual(['alive', 'back', 'cli', 'elsewhere']);
    expect((await store.dump()).has(`/veil/v1/ipam/${net.id}/${orphan.ipv4}`)).toBe(false);
    expect(back.runtime).toEqual({ kind: 'cni', containerId: 'c-back' });
    expect(await reaper.sweep()).toEqual([]);
    await store.close();
  });

  it("looks at the endpoints it is given (the agent's watched ones), not at etcd", async () => {
    const store = new MemoryStore();
    const net = await store.createNetwork({ name: 'pods', ipam: { subnet: '10.9.0.0/24' } });
    const orphan = await store.createEndpoint({
      networkId: net.id,
      name: 'orphan',
      hostId: 'h1',
      sandbox: { netns: '/run/netns/gone' },
      runtime: { kind: 'cni', containerId: 'c1' },
    });
    let watched: (typeof orphan)[] = []; // the watch has not delivered it yet
    const reaper = new RuntimeReaper({
      store,
      endpoints: () => watched,
      hostId: 'h1',
      exists: () => false,
      log: () => undefined,
    });
    expect([await reaper.sweep(), await reaper.sweep()]).toEqual([[], []]);
    watched = [orphan];
    await reaper.sweep();
    expect((await reaper.sweep()).map((e) => e.name)).toEqual(['orphan']);
    expect((await store.listEndpoints(net.id)).items).toEqual([]);
    await store.close();
  });
});
