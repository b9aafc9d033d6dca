import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildDockerPluginApp } from '../../src/api/docker-plugin.js';
import { FakeEngine } from '../../src/docker/engine-fake.js';
import { DockerPlugin, type RuntimePorts } from '../../src/docker/plugin.js';
import { PLUGIN_CONTENT_TYPE } from '../../src/docker/protocol.js';
import { MemoryStore } from '../../src/store/memory.js';
import { sampleHost } from '../store/harness.js';
import { waitFor } from '../support/wait.js';
import type { Store } from '../../src/store/types.js';

// The plugin as Docker 20.10 drives it (the order of calls seen from a real dockerd: docs/docker.md
// "Protocol"), over HTTP with inject(), on the memory store.

const NET_A = 'a'.repeat(64);
const NET_B = 'b'.repeat(64);
const EP_1 = '1'.repeat(64);
const EP_2 = '2'.repeat(64);

class Ports implements RuntimePorts {
  readonly attached = new Map<string, string>();
  async attach(network: { vni: number }, endpoint: { id: string; mac: string }) {
    const name = `vh${endpoint.id.slice(0, 6)}`;
    this.attached.set(endpoint.id, `${network.vni}/${endpoint.mac}`);
    return name;
  }
  async detach(_network: unknown, endpointId: string) {
    this.attached.delete(endpointId);
  }
  /** SandboxKey → (MAC → interface name): what Docker moved into each container's namespace. */
  readonly moved = new Map<string, Map<string, string>>();
  async interfaceIn(sandbox: { pid: number } | { netns: string }, mac: string) {
    return 'netns' in sandbox ? this.moved.get(sandbox.netns)?.get(mac) : undefined;
  }
}

function dockerHost(store: Store, hostId: string, opts: { boundMs?: number } = {}) {
  const engine = new FakeEngine();
  const ports = new Ports();
  const logged: Array<{ level: string; event: string; fields?: Record<string, unknown> }> = [];
  const plugin = new DockerPlugin({
    store,
    hostId,
    engine,
    ports,
    log: (level, event, fields) => logged.push({ level, event, ...(fields ? { fields } : {}) }),
    engineWaitMs: 300,
    joinWaitMs: 2_000,
    resolverAddress: '169.254.53.53',
  });
  const app = buildDockerPluginApp(plugin, opts);
  const call = async (method: string, body: unknown = {}) => {
    const res = await app.inject({
      method: 'POST',
      url: `/${method}`,
      headers: { 'content-type': PLUGIN_CONTENT_TYPE },
      payload: JSON.stringify(body),
    });
    expect(res.headers['content-type']).toContain(PLUGIN_CONTENT_TYPE);
    const answer = res.json() as Record<string, unknown> & { Err?: string };
    // Docker reads Err from a non-200 answer only.
    expect(res.statusCode === 200, `${method}: ${res.statusCode} ${res.body}`).toBe(answer.Err === undefined);
    return answer;
  };
  /** `docker network create -d veil --ipam-driver veil ...` as dockerd sequences it. */
  const createNetwork = async (
    id: string,
    name: string,
    subnet: string,
    o: { ipRange?: string; gateway?: string; options?: Record<string, string>; internal?: boolean } = {},
  ) => {
    const pool = await call('IpamDriver.RequestPool', {
      AddressSpace: 'veil',
      Pool: subnet,
      SubPool: o.ipRange ?? '',
      Options: {},
      V6: false,
    });
    if (pool.Err) return pool;
    const gw = await call('IpamDriver.RequestAddress', {
      PoolID: pool.PoolID,
      Address: o.gateway ?? '',
      Options: { RequestAddressType: 'com.docker.network.gateway' },
    });
    if (gw.Err) return gw;
    const created = await call('NetworkDriver.CreateNetwork', {
      NetworkID: id,
      Options: {
        'com.docker.network.enable_ipv6': false,
        'com.docker.network.generic': o.options ?? {},
        ...(o.internal ? { 'com.docker.network.internal': true } : {}),
      },
      IPv4Data: [{ AddressSpace: 'veil', Gateway: gw.Address, Pool: subnet }],
      IPv6Data: [],
    });
    if (created.Err) return created;
    // What Docker stores once CreateNetwork answered.
    engine.add(id, name, subnet, {
      Internal: o.internal ?? false,
      Attachable: true,
      Labels: { team: 'a' },
      Options: o.options ?? {},
      IPAM: {
        Driver: 'veil',
        Config: [
          { Subnet: subnet, ...(o.ipRange ? { IPRange: o.ipRange } : {}), Gateway: String(gw.Address).split('/')[0] },
        ],
      },
    });
    return { ...created, PoolID: pool.PoolID };
  };
  /** `docker run --network ...` up to the interface: address, endpoint, join. */
  const run = async (netId: string, poolId: string, endpointId: string, ip = '') => {
    const addr = await call('IpamDriver.RequestAddress', { PoolID: poolId, Address: ip, Options: null });
    if (addr.Err) return addr;
    const ep = await call('NetworkDriver.CreateEndpoint', {
      NetworkID: netId,
      EndpointID: endpointId,
      Interface: { Address: addr.Address, AddressIPv6: '', MacAddress: '' },
      Options: {},
    });
    if (ep.Err) return ep;
    const join = await call('NetworkDriver.Join', {
      NetworkID: netId,
      EndpointID: endpointId,
      SandboxKey: '/var/run/docker/netns/x',
      Options: {},
    });
    return { ...join, Address: addr.Address, Interface: ep.Interface };
  };
  /** `docker rm`: leave, delete the endpoint, release the address. */
  const remove = async (netId: string, poolId: string, endpointId: string, address: string) => {
    expect(await call('NetworkDriver.Leave', { NetworkID: netId, EndpointID: endpointId })).toEqual({});
    expect(await call('NetworkDriver.DeleteEndpoint', { NetworkID: netId, EndpointID: endpointId })).toEqual({});
    expect(await call('IpamDriver.ReleaseAddress', { PoolID: poolId, Address: address.split('/')[0] })).toEqual({});
  };
  return { engine, ports, plugin, app, call, createNetwork, run, remove, logged };
}

let store: MemoryStore;
beforeEach(() => {
  store = new MemoryStore();
});
afterEach(async () => {
  await store.close();
});

describe('the veil Docker plugin', () => {
  it('activates as a network and an IPAM driver of local scope', async () => {
    const h = dockerHost(store, 'h1');
    expect(await h.call('Plugin.Activate')).toEqual({ Implements: ['NetworkDriver', 'IpamDriver'] });
    // As dockerd posts it: no body, no content type.
    const bare = await h.app.inject({ method: 'POST', url: '/Plugin.Activate' });
    expect(bare.json()).toEqual({ Implements: ['NetworkDriver', 'IpamDriver'] });
    expect(await h.call('NetworkDriver.GetCapabilities')).toEqual({ Scope: 'local', ConnectivityScope: 'global' });
    expect(await h.call('IpamDriver.GetDefaultAddressSpaces')).toEqual({
      LocalDefaultAddressSpace: 'veil',
      GlobalDefaultAddressSpace: 'veil',
    });
  });

  it('docker network create makes the veil network of that name, with Docker’s settings; docker run gets a veil address, an endpoint and a port; docker rm leaves nothing', async () => {
    const h = dockerHost(store, 'h1');
    const made = await h.createNetwork(NET_A, 'secure', '10.30.0.0/24', {
      ipRange: '10.30.0.128/25',
      options: { encrypted: '' },
    });
    expect(made.Err).toBeUndefined();
    // Bound (the veil network made) once Docker shows the network; a call on it waits for that.
    expect(await h.call('NetworkDriver.EndpointOperInfo', { NetworkID: NET_A, EndpointID: EP_1 })).toEqual({
      Value: {},
    });
    const before = await store.dump();
    const c = await h.run(NET_A, String(made.PoolID), EP_1);
    expect(c).toMatchObject({
      Address: '10.30.0.128/24',
      Interface: { MacAddress: '02:42:0a:1e:00:80' },
      InterfaceName: { SrcName: `vh${EP_1.slice(0, 6)}`, DstPrefix: 'eth' },
      // The resolver's route from the start (docs/docker.md "Names across hosts").
      StaticRoutes: [{ Destination: '169.254.53.53/32', RouteType: 1 }],
      DisableGatewayService: false,
    });
    const net = await store.getNetwork('secure');
    expect(net).toMatchObject({
      encrypted: true,
      attachable: true,
      internal: false,
      labels: { team: 'a' },
      ipam: { subnet: '10.30.0.0/24', gateway: '10.30.0.1', ipRange: '10.30.0.128/25' },
    });
    const [ep] = (await store.listEndpoints(net.id)).items;
    expect(ep).toMatchObject({ id: EP_1, hostId: 'h1', ipv4: '10.30.0.128', mac: '02:42:0a:1e:00:80' });
    expect(h.ports.attached.get(EP_1)).toBe(`${net.vni}/02:42:0a:1e:00:80`);
    await h.remove(NET_A, String(made.PoolID), EP_1, String(c.Address));
    expect(h.ports.attached.size).toBe(0);
    expect(await store.dump()).toEqual(before);
  });

  it('after Join, the container’s name, aliases, namespace and interface reach its endpoint in etcd', async () => {
    const h = dockerHost(store, 'h1');
    const made = await h.createNetwork(NET_A, 'secure', '10.38.0.0/24');
    const c = await h.run(NET_A, String(made.PoolID), EP_1);
    const mac = String((c.Interface as { MacAddress: string }).MacAddress);
    expect(h.plugin.learnt(EP_1)).toBe(false);
    // Docker moves the port into the namespace: recorded before the container is even listed.
    h.ports.moved.set('/var/run/docker/netns/x', new Map([[mac, 'eth0']]));
    await waitFor(
      async () => (await store.listEndpoints()).items.find((e) => e.id === EP_1)?.ifName === 'eth0',
      3_000,
      'namespace recorded',
    );
    // Docker lists the endpoint under "ep-<id>" until the container is attached: not a container yet.
    h.engine.networks.get(NET_A)!.Containers = { [`ep-${EP_1}`]: { Name: '', EndpointID: EP_1 } };
    await new Promise((r) => setTimeout(r, 50));
    expect(h.plugin.learnt(EP_1)).toBe(false);
    // Then it starts the container and lists it on the network.
    h.engine.run(NET_A, EP_1, 'c'.repeat(64), 'web', 4242, ['www', 'cccccccccccc']);
    await waitFor(() => h.plugin.learnt(EP_1), 3_000, 'endpoint named');
    const net = await store.getNetwork('secure');
    expect((await store.listEndpoints(net.id)).items).toEqual([
      expect.objectContaining({
        id: EP_1,
        name: 'web',
        aliases: ['www', 'cccccccccccc'],
        sandbox: { netns: '/var/run/docker/netns/x' },
        ifName: 'eth0',
        ipv4: String(c.Address).split('/')[0],
      }),
    ]);
  });

  it('a container that leaves before Docker showed it is not looked for any more', async () => {
    const h = dockerHost(store, 'h1');
    const made = await h.createNetwork(NET_A, 'secure', '10.39.0.0/24');
    const c = await h.run(NET_A, String(made.PoolID), EP_1);
    await h.remove(NET_A, String(made.PoolID), EP_1, String(c.Address));
    expect(h.plugin.learnt(EP_1)).toBe(true);
    h.engine.run(NET_A, EP_1, 'c'.repeat(64), 'web', 4242);
    await new Promise((r) => setTimeout(r, 100));
    expect((await store.listEndpoints((await store.getNetwork('secure')).id)).items).toEqual([]);
  });

  it('the same network created on a second host joins it: one veil network, addresses never handed out twice', async () => {
    const h1 = dockerHost(store, 'h1');
    const h2 = dockerHost(store, 'h2');
    const a = await h1.createNetwork(NET_A, 'secure', '10.31.0.0/24', { options: { encrypted: '' } });
    const b = await h2.createNetwork(NET_B, 'secure', '10.31.0.0/24', { options: { encrypted: '' } });
    expect([a.Err, b.Err]).toEqual([undefined, undefined]);
    const [c1, c2] = await Promise.all([h1.run(NET_A, String(a.PoolID), EP_1), h2.run(NET_B, String(b.PoolID), EP_2)]);
    expect(new Set([c1.Address, c2.Address]).size).toBe(2);
    const nets = (await store.listNetworks()).items;
    expect(nets.map((n) => n.name)).toEqual(['secure']);
    const eps = (await store.listEndpoints(nets[0]!.id)).items;
    expect(eps.map((e) => e.hostId).sort()).toEqual(['h1', 'h2']);
    // --ip of an address the other host holds: refused.
    const taken = await h2.call('IpamDriver.RequestAddress', {
      PoolID: b.PoolID,
      Address: String(c1.Address).split('/')[0],
      Options: null,
    });
    expect(taken.Err).toMatch(/IP address already in use/);
  });

  it('a disagreement on the same subnet is refused at create with what differs, and nothing is written', async () => {
    const h1 = dockerHost(store, 'h1');
    const h2 = dockerHost(store, 'h2');
    await h1.createNetwork(NET_A, 'secure', '10.32.0.0/24', { options: { encrypted: '' } });
    await h1.run(NET_A, '10.32.0.0/24', EP_1);
    const before = await store.dump();
    expect((await h2.createNetwork(NET_B, 'secure', '10.32.0.0/24')).Err).toMatch(
      /veil network secure .*plain \(no -o encrypted\), veil has it encrypted/,
    );
    expect(
      (await h2.createNetwork(NET_B, 'secure', '10.32.0.0/24', { options: { encrypted: '' }, gateway: '10.32.0.9' }))
        .Err,
    ).toMatch(/gateway 10\.32\.0\.9, veil has 10\.32\.0\.1/);
    expect(
      (await h2.createNetwork(NET_B, 'other', '10.32.0.0/24', { options: { encrypted: '' }, internal: true })).Err,
    ).toMatch(/internal true, veil has false/);
    expect(await store.dump()).toEqual(before);
  });

  it('the name of a veil network with another subnet: refused at the first container, with the fix', async () => {
    const h1 = dockerHost(store, 'h1');
    const h2 = dockerHost(store, 'h2');
    await h1.createNetwork(NET_A, 'secure', '10.33.0.0/24', { options: { encrypted: '' } });
    await h1.run(NET_A, '10.33.0.0/24', EP_1);
    const made = await h2.createNetwork(NET_B, 'secure', '10.34.0.0/24', { options: { encrypted: '' } });
    expect(made.Err).toBeUndefined(); // Docker does not tell a driver the name (docs/docker.md "Names")
    const before = await store.dump();
    const c = await h2.run(NET_B, String(made.PoolID), EP_2);
    expect(c.Err).toMatch(/no veil network has subnet 10\.34\.0\.0\/24/);
    const ep = await h2.call('NetworkDriver.CreateEndpoint', {
      NetworkID: NET_B,
      EndpointID: EP_2,
      Interface: { Address: '10.34.0.2/24' },
    });
    expect(ep.Err).toMatch(
      /Docker network secure cannot be veil's: .*subnet 10\.34\.0\.0\/24, veil has 10\.33\.0\.0\/24.*docker network rm secure/,
    );
    expect(await store.dump()).toEqual(before);
  });

  it('refuses what a veil network cannot be, each with the reason', async () => {
    const h = dockerHost(store, 'h1');
    const err = async (method: string, body: unknown) => (await h.call(method, body)).Err;
    expect(await err('IpamDriver.RequestPool', { AddressSpace: 'veil', Pool: '', SubPool: '', V6: false })).toMatch(
      /--subnet is required/,
    );
    expect(
      await err('IpamDriver.RequestPool', { AddressSpace: 'veil', Pool: 'fd00::/64', SubPool: '', V6: true }),
    ).toMatch(/IPv4 only/);
    expect(
      await err('IpamDriver.RequestPool', { AddressSpace: 'veil', Pool: '169.254.0.0/16', SubPool: '', V6: false }),
    ).toMatch(/link-local/);
    expect(
      await err('IpamDriver.RequestPool', {
        AddressSpace: 'veil',
        Pool: '10.1.0.0/24',
        SubPool: '10.2.0.0/25',
        V6: false,
      }),
    ).toMatch(/--ip-range 10\.2\.0\.0\/25 is not a network inside 10\.1\.0\.0\/24/);
    expect(
      (await h.createNetwork(NET_A, 'x', '10.35.0.0/24', { options: { encrypted: '', mtu: '1400' } })).Err,
    ).toMatch(/unknown option -o mtu \(veil takes -o encrypted, -o strict\)/);
    expect((await h.createNetwork(NET_A, 'x', '10.35.0.0/24', { options: { strict: '' } })).Err).toMatch(
      /strict.*encrypted networks only/,
    );
    // Left out --ipam-driver veil: Docker's own IPAM made the pool.
    expect(
      await err('NetworkDriver.CreateNetwork', {
        NetworkID: NET_A,
        Options: { 'com.docker.network.generic': {} },
        IPv4Data: [{ AddressSpace: 'LocalDefault', Gateway: '172.18.0.1/16', Pool: '172.18.0.0/16' }],
      }),
    ).toMatch(/add --ipam-driver veil/);
    expect((await store.listNetworks()).items).toEqual([]);
  });

  it('refuses --aux-address, at the address Docker asks for it and at CreateNetwork, and writes nothing', async () => {
    const h = dockerHost(store, 'h1');
    const pool = await h.call('IpamDriver.RequestPool', { AddressSpace: 'veil', Pool: '10.38.0.0/24', SubPool: '' });
    await h.call('IpamDriver.RequestAddress', {
      PoolID: pool.PoolID,
      Address: '',
      Options: { RequestAddressType: 'com.docker.network.gateway' },
    });
    // Docker asks for each --aux-address right after the gateway, before CreateNetwork.
    const aux = await h.call('IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '10.38.0.9', Options: null });
    expect(aux.Err).toMatch(/--aux-address is not supported/);
    const created = await h.call('NetworkDriver.CreateNetwork', {
      NetworkID: NET_A,
      Options: { 'com.docker.network.generic': {} },
      IPv4Data: [
        { AddressSpace: 'veil', Gateway: '10.38.0.1/24', Pool: '10.38.0.0/24', AuxAddresses: { r: '10.38.0.9/24' } },
      ],
    });
    expect(created.Err).toMatch(/--aux-address is not supported/);
    expect(await store.dump()).toEqual(new Map());
  });

  it('a reservation no endpoint took (Docker died between RequestAddress and CreateEndpoint) is freed on the second sweep', async () => {
    const h = dockerHost(store, 'h1');
    const other = dockerHost(store, 'h2');
    const made = await h.createNetwork(NET_A, 'secure', '10.39.0.0/24');
    await other.createNetwork(NET_B, 'secure', '10.39.0.0/24');
    const orphan = await h.call('IpamDriver.RequestAddress', { PoolID: made.PoolID, Address: '', Options: null });
    const theirs = await other.call('IpamDriver.RequestAddress', { PoolID: made.PoolID, Address: '', Options: null });
    const net = await store.getNetwork('secure');
    expect(await h.plugin.sweepReservations()).toEqual([]); // maybe Docker is between the two calls
    // A container started since: its address is its endpoint's, not a reservation.
    const c = await h.run(NET_A, String(made.PoolID), EP_1);
    expect(c.Err).toBeUndefined();
    const orphanIp = String(orphan.Address).split('/')[0]!;
    expect(await h.plugin.sweepReservations()).toEqual([orphanIp]);
    expect(h.logged).toContainEqual({
      level: 'info',
      event: 'docker reservation freed',
      fields: { network: 'secure', ipv4: orphanIp, reason: 'no endpoint took it' },
    });
    expect(await store.listReservations(net.id, 'h1')).toEqual([]);
    // Another host's reservation is its own plugin's to sweep; the container's address stays.
    expect((await store.listReservations(net.id, 'h2')).map((r) => r.ipv4)).toEqual([
      String(theirs.Address).split('/')[0],
    ]);
    // The same address reserved anew between two sweeps is a new reservation: not freed.
    const again = await h.call('IpamDriver.RequestAddress', { PoolID: made.PoolID, Address: orphanIp, Options: null });
    expect(again.Err).toBeUndefined();
    expect(await h.plugin.sweepReservations()).toEqual([]);
    await h.call('IpamDriver.ReleaseAddress', { PoolID: made.PoolID, Address: orphanIp });
    const renewed = await h.call('IpamDriver.RequestAddress', {
      PoolID: made.PoolID,
      Address: orphanIp,
      Options: null,
    });
    expect(renewed.Err).toBeUndefined();
    expect(await h.plugin.sweepReservations()).toEqual([]); // seen once (a new revision)
    expect((await store.listEndpoints(net.id)).items.map((e) => e.ipv4)).toEqual([String(c.Address).split('/')[0]]);
    expect(await h.plugin.sweepReservations()).toEqual([orphanIp]); // and unclaimed a second time: freed
  });

  it('on a Windows host, a container on an encrypted network is warned about, or refused when the network is strict', async () => {
    // The Docker networks were made while the host ran Linux; its gateway came back as a Windows host.
    const linux = await store.registerHost(sampleHost('win1'), 30);
    const h = dockerHost(store, 'win1');
    const open = await h.createNetwork(NET_A, 'open', '10.40.0.0/24', { options: { encrypted: '' } });
    const hard = await h.createNetwork(NET_B, 'hard', '10.41.0.0/24', { options: { encrypted: '', strict: '' } });
    await linux.revoke();
    await store.registerHost(sampleHost('win1', { os: 'windows' }), 30);
    expect((await h.run(NET_A, String(open.PoolID), EP_1)).Err).toBeUndefined();
    expect(h.logged).toContainEqual({
      level: 'warn',
      event: 'docker endpoint not protected',
      fields: { warning: expect.stringMatching(/Windows host win1.*encrypted network open will not be protected/) },
    });
    const refused = await h.run(NET_B, String(hard.PoolID), EP_2);
    expect(refused.Err).toMatch(/this is Windows host win1; network hard is strict/);
    expect((await store.listEndpoints((await store.getNetwork('hard')).id)).items).toEqual([]);
  });

  it('deletes and releases of what veil does not have answer as done (Docker retries them after crashes)', async () => {
    const h = dockerHost(store, 'h1');
    const made = await h.createNetwork(NET_A, 'secure', '10.36.0.0/24');
    expect(await h.call('NetworkDriver.Leave', { NetworkID: NET_A, EndpointID: EP_2 })).toEqual({});
    expect(await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: NET_A, EndpointID: EP_2 })).toEqual({});
    expect(await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: NET_B, EndpointID: EP_2 })).toEqual({});
    expect(await h.call('IpamDriver.ReleaseAddress', { PoolID: made.PoolID, Address: '10.36.0.77' })).toEqual({});
    expect(await h.call('IpamDriver.ReleaseAddress', { PoolID: '10.99.0.0/24', Address: '10.99.0.2' })).toEqual({});
    expect(await h.call('IpamDriver.ReleasePool', { PoolID: made.PoolID })).toEqual({});
    // docker network rm: the veil network stays for the other hosts (docs/docker.md "Networks").
    expect(await h.call('NetworkDriver.DeleteNetwork', { NetworkID: NET_A })).toEqual({});
    expect((await store.getNetwork('secure')).name).toBe('secure');
    const unknown = await h.app.inject({ method: 'POST', url: '/NetworkDriver.Unknown', payload: {} });
    expect([unknown.statusCode, unknown.json()]).toEqual([404, { Err: expect.stringMatching(/does not implement/) }]);
  });

  it('never hangs Docker: a call that cannot finish answers Err within the bound', async () => {
    const h = dockerHost(store, 'h1', { boundMs: 200 });
    await h.createNetwork(NET_A, 'secure', '10.37.0.0/24');
    // etcd gone: every store call waits forever.
    const stuck = new Proxy(store, {
      get: (t, p) => (typeof (t as never)[p] === 'function' ? () => new Promise(() => undefined) : (t as never)[p]),
    });
    const plugin = new DockerPlugin({ store: stuck, hostId: 'h1', engine: h.engine, ports: h.ports });
    const app = buildDockerPluginApp(plugin, { boundMs: 200 });
    const started = Date.now();
    const res = await app.inject({
      method: 'POST',
      url: '/NetworkDriver.CreateEndpoint',
      payload: { NetworkID: NET_A, EndpointID: EP_1, Interface: { Address: '10.37.0.2/24' } },
    });
    expect(res.json()).toEqual({
      Err: expect.stringMatching(/NetworkDriver\.CreateEndpoint: no answer within 200 ms/),
    });
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
