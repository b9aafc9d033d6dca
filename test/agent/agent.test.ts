// The host agent against the in-memory store, with the gateway's two seams (plumbing, data path)
// replaced by recorders: what it programs for hosts, networks and containers, and the Windows rules.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HostAgent } from '../../src/agent/agent.js';
import { SecretKey } from '../../src/crypto/secret.js';
import { MemoryBackend } from '../../src/store/memory.js';
import type { Store } from '../../src/store/types.js';
import { Gateway } from '../../src/vxlan/gateway.js';
import { gatewayAddress } from '../../src/model/peer-net.js';
import { VTEP_GATEWAY_PORT } from '../../src/vxlan/wire/constants.js';
import { RecordingDataPath } from '../../src/vxlan/datapath-fake.js';
import { RecordingPlumbing } from '../../src/vxlan/plumbing-fake.js';
import { sampleHost } from '../store/harness.js';
import { waitUntil } from '../support/wait.js';

let backend: MemoryBackend;
let store: Store;
let plumbing: RecordingPlumbing;
let dataPath: RecordingDataPath;
let agent: HostAgent;
let logs: Array<{ level: string; event: string; fields?: Record<string, unknown> }>;

function makeAgent(os = 'linux', timing: { leaseTtlSeconds?: number; trafficSampleMs?: number } = {}) {
  plumbing = new RecordingPlumbing();
  dataPath = new RecordingDataPath();
  const self = { id: 'h1', index: 0, address: '198.18.0.1', publicKey: new Uint8Array(32), incarnation: 'i1' };
  const gateway = new Gateway({ self, privateKey: new SecretKey(new Uint8Array(32).fill(7)), plumbing, dataPath });
  logs = [];
  return new HostAgent({
    store,
    gateway,
    self: { ...sampleHost('h1', { os }), address: '198.18.0.1' },
    leaseTtlSeconds: timing.leaseTtlSeconds ?? 5,
    ...(timing.trafficSampleMs !== undefined ? { trafficSampleMs: timing.trafficSampleMs } : {}),
    onIndex: (i) => (self.index = i),
    log: (level, event, fields) => logs.push({ level, event, ...(fields ? { fields } : {}) }),
  });
}

beforeEach(() => {
  backend = new MemoryBackend();
  store = backend.client();
});
afterEach(async () => {
  await agent?.stop();
  await store.close();
});

describe('HostAgent', () => {
  it('plumbs every network, makes every other live host a peer, attaches its own containers and points remote MACs at their host', async () => {
    const h2 = await store.registerHost(sampleHost('h2'), 30);
    const net = await store.createNetwork({ name: 'n', ipam: { subnet: '10.9.0.0/24' } });
    const local = await store.createEndpoint({
      networkId: net.id,
      name: 'mine',
      hostId: 'h1',
      sandbox: { netns: '/run/netns/mine' },
    });
    const remote = await store.createEndpoint({ networkId: net.id, name: 'theirs', hostId: 'h2' });
    agent = makeAgent();
    await agent.start();
    await agent.settled();
    expect([...plumbing.networks.keys()]).toEqual([net.vni]);
    expect([...dataPath.peers.keys()]).toEqual(['h2']);
    expect(plumbing.containers.get(`${net.vni}/${local.id}`)).toMatchObject({
      netns: { path: '/run/netns/mine' },
      mac: local.mac,
      ipv4: `${local.ipv4}/24`,
    });
    expect(await plumbing.listFdb(net.vni)).toEqual(
      expect.arrayContaining([
        { mac: '00:00:00:00:00:00', dst: gatewayAddress(plumbing.peerNet, h2.index), port: VTEP_GATEWAY_PORT },
        { mac: remote.mac, dst: gatewayAddress(plumbing.peerNet, h2.index), port: VTEP_GATEWAY_PORT },
      ]),
    );

    // Changes arrive through the watch: a new remote container, then its host goes away.
    const later = await store.createEndpoint({ networkId: net.id, name: 'later', hostId: 'h2' });
    await waitUntil('the new MAC is programmed', async () =>
      (await plumbing.listFdb(net.vni)).some((e) => e.mac === later.mac),
    );
    await store.deleteEndpoint(net.id, remote.id);
    await waitUntil(
      'the removed MAC is gone',
      async () => !(await plumbing.listFdb(net.vni)).some((e) => e.mac === remote.mac),
    );
    await h2.revoke();
    await waitUntil('h2 is no peer', () => !dataPath.peers.has('h2'));
    expect(await plumbing.listFdb(net.vni)).toEqual([]);
    // It comes back (a restart: new incarnation): flood and MAC entries return.
    await store.registerHost(sampleHost('h2', { incarnation: 'new' }), 30);
    await waitUntil('h2 is back with its MAC', async () =>
      (await plumbing.listFdb(net.vni)).some((e) => e.mac === later.mac),
    );
    expect(agent.status()).toMatchObject({
      host: 'h1',
      registered: true,
      peers: ['h2'],
      networks: 1,
      localEndpoints: 1,
      remoteMacs: 1,
    });
  });

  it('keeps a peer cut off from etcd while its traffic arrives, and removes it one lease TTL after it stops', async () => {
    const h2 = await store.registerHost(sampleHost('h2'), 30);
    const net = await store.createNetwork({ name: 'n', ipam: { subnet: '10.9.0.0/24' } });
    const remote = await store.createEndpoint({ networkId: net.id, name: 'theirs', hostId: 'h2' });
    agent = makeAgent('linux', { leaseTtlSeconds: 1, trafficSampleMs: 50 });
    await agent.start();
    await waitUntil('h2 is a peer with its MAC', async () =>
      (await plumbing.listFdb(net.vni)).some((e) => e.mac === remote.mac),
    );
    // h2 keeps sending (its packets open here), but its lease is gone from etcd.
    let rx = 0;
    const traffic = setInterval(() => dataPath.opened.set('h2', (rx += 10)), 100);
    try {
      await new Promise((r) => setTimeout(r, 300));
      await h2.revoke();
      await waitUntil('h2 kept as cut off', () => agent.status().cutOffPeers.includes('h2'));
      await new Promise((r) => setTimeout(r, 2_500)); // more than two lease TTLs
      expect(dataPath.peers.has('h2')).toBe(true);
      expect((await plumbing.listFdb(net.vni)).some((e) => e.mac === remote.mac)).toBe(true);
      expect(logs.some((l) => l.event.includes('traffic still arrives'))).toBe(true);
    } finally {
      clearInterval(traffic);
    }
    // Silence: gone one TTL later, FDB entries with it.
    const quietAt = Date.now();
    await waitUntil('h2 removed', () => !dataPath.peers.has('h2'), 5_000);
    expect(Date.now() - quietAt).toBeGreaterThanOrEqual(900);
    expect(agent.status()).toMatchObject({ peers: [], cutOffPeers: [] });
    expect(await plumbing.listFdb(net.vni)).toEqual([]);
  });

  it('plain VXLAN from a peer whose record went away does not keep it: anyone on the underlay can send that', async () => {
    const h2 = await store.registerHost(sampleHost('h2'), 30);
    agent = makeAgent('linux', { leaseTtlSeconds: 1, trafficSampleMs: 50 });
    await agent.start();
    await waitUntil('h2 is a peer', () => dataPath.peers.has('h2'));
    let rx = 0;
    const plain = setInterval(() => dataPath.rxPackets.set('h2', (rx += 10)), 100);
    try {
      await new Promise((r) => setTimeout(r, 300));
      await h2.revoke();
      await waitUntil('h2 removed', () => !dataPath.peers.has('h2'), 2_000);
      expect(agent.status().cutOffPeers).toEqual([]);
    } finally {
      clearInterval(plain);
    }
  });

  it('warns once when a peer runs another release line (its SA keys may be derived otherwise)', async () => {
    await store.registerHost(sampleHost('h2', { version: '0.1.0' }), 30);
    await store.registerHost(sampleHost('h3'), 30);
    agent = makeAgent();
    await agent.start();
    await agent.settled();
    expect([...dataPath.peers.keys()].sort()).toEqual(['h2', 'h3']);
    const warned = logs.filter((l) => l.event.startsWith('peer runs another veil release'));
    expect(warned.map((l) => l.fields)).toEqual([expect.objectContaining({ peer: 'h2', peerVersion: '0.1.0' })]);
  });

  it('a peer that was silent when its record went away is removed at once (a dead host)', async () => {
    const h2 = await store.registerHost(sampleHost('h2'), 30);
    agent = makeAgent('linux', { leaseTtlSeconds: 1, trafficSampleMs: 50 });
    await agent.start();
    await waitUntil('h2 is a peer', () => dataPath.peers.has('h2'));
    await h2.revoke();
    await waitUntil('h2 removed', () => !dataPath.peers.has('h2'), 2_000);
    expect(agent.status().cutOffPeers).toEqual([]);
  });

  it('detaches a local container whose endpoint is deleted elsewhere, and removes a deleted network', async () => {
    agent = makeAgent();
    await agent.start();
    const net = await store.createNetwork({ name: 'n2', ipam: { subnet: '10.8.0.0/24' } });
    const ep = await store.createEndpoint({ networkId: net.id, name: 'c', hostId: 'h1', sandbox: { pid: 4242 } });
    await waitUntil('attached', () => plumbing.containers.has(`${net.vni}/${ep.id}`));
    expect(plumbing.containers.get(`${net.vni}/${ep.id}`)!.netns).toEqual({ pid: 4242 });
    await store.deleteEndpoint(net.id, ep.id);
    await waitUntil('detached', () => plumbing.containers.size === 0);
    await store.deleteNetwork(net.id);
    await waitUntil('network removed', () => plumbing.networks.size === 0);
  });

  it('a local container that cannot be plumbed is reported once, not retried in a loop, and the agent keeps going', async () => {
    agent = makeAgent();
    await agent.start();
    plumbing.failAttach = true;
    const net = await store.createNetwork({ name: 'n3', ipam: { subnet: '10.7.0.0/24' } });
    await store.createEndpoint({
      networkId: net.id,
      name: 'gone',
      hostId: 'h1',
      sandbox: { netns: '/run/netns/gone' },
    });
    await waitUntil('failure reported', () => agent.status().attachFailures.length === 1);
    expect(agent.status().attachFailures[0]).toMatchObject({
      endpoint: 'gone',
      error: expect.stringMatching(/namespace/),
    });
    expect(logs.filter((l) => l.event === 'cannot attach a local container')).toHaveLength(1);
    await store.createNetwork({ name: 'n4', ipam: { subnet: '10.6.0.0/24' } });
    await waitUntil('still following', () => plumbing.networks.size === 2);
  });

  it('a Windows host registering while encrypted networks exist is warned (and logged); with a strict network it is refused and not registered', async () => {
    await store.createNetwork({ name: 'secure', encrypted: true, ipam: { subnet: '10.5.0.0/24' } });
    agent = makeAgent('windows');
    const { warning } = await agent.start();
    expect(warning).toMatch(/Windows hosts cannot encrypt overlay traffic.*h1.*secure.*not be protected/);
    expect(logs.some((l) => l.level === 'warn' && /Windows host registering/.test(l.event))).toBe(true);
    await agent.stop();

    await store.createNetwork({
      name: 'locked',
      encrypted: true,
      options: { encrypted: '', strict: '' },
      ipam: { subnet: '10.4.0.0/24' },
    });
    agent = makeAgent('windows');
    await expect(agent.start()).rejects.toMatchObject({ code: 'VEIL_ERR_STRICT_UNENCRYPTED_HOST' });
    expect((await store.listHosts()).items).toEqual([]);
  });

  it('a Linux host registers without a warning', async () => {
    await store.createNetwork({ name: 'secure', encrypted: true, ipam: { subnet: '10.5.0.0/24' } });
    agent = makeAgent();
    expect((await agent.start()).warning).toBe('');
  });
});
