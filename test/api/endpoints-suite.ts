// connect / disconnect / hosts / openapi through inject(), on the in-memory store and on real etcd.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/api/app.js';
import { endpointId, type LocalHost } from '../../src/api/networks.js';
import { VeilError } from '../../src/errors.js';
import type { EndpointRecord, NetworkRecord, Store } from '../../src/store/types.js';
import type { GatewayStatus } from '../../src/vxlan/gateway.js';
import { sampleHost, type StoreBed, type StoreImpl } from '../store/harness.js';

export const emptyStatus: GatewayStatus = {
  host: 'h1',
  peers: [],
  networks: [],
  pairs: [],
  unattributedDrops: {},
  sendFailures: 0,
};

/** The test's stand-in for the host agent at the LocalHost seam: records calls, fails on demand. */
class RecordingLocal implements LocalHost {
  readonly hostId = 'h1';
  attached: EndpointRecord[] = [];
  detached: EndpointRecord[] = [];
  failNext = false;
  async attach(_n: NetworkRecord, e: EndpointRecord): Promise<void> {
    if (this.failNext) {
      this.failNext = false;
      throw new VeilError('VEIL_ERR_ATTACH_FAILED', `${e.name}: Cannot open network namespace "/run/netns/gone"`);
    }
    this.attached.push(e);
  }
  async detach(e: EndpointRecord): Promise<void> {
    this.detached.push(e);
  }
}

/** The endpoints API; run on the memory store (unit tier) and on real etcd (system tier). */
export function describeEndpointsApi(impl: StoreImpl): void {
  describe(`endpoints API on the ${impl.name} store`, () => {
    let bed: StoreBed;
    let store: Store;
    let local: RecordingLocal;
    let app: ReturnType<typeof buildApp>;

    beforeAll(() => impl.start(), 60_000);
    afterAll(() => impl.stop());
    beforeEach(async () => {
      bed = await impl.bed();
      store = bed.store;
      local = new RecordingLocal();
      app = buildApp({ gatewayStatus: () => emptyStatus, store, local });
      await store.registerHost(sampleHost('h1'), 30);
      await store.registerHost(sampleHost('h2'), 30);
    });
    afterEach(async () => {
      await app.close();
      await bed.close();
    });

    const post = (url: string, payload: unknown) => app.inject({ method: 'POST', url, payload: payload as object });
    const makeNetwork = async (name: string, options: Record<string, string> = { encrypted: '' }) =>
      (
        await post('/networks', {
          Name: name,
          Options: options,
          IPAM: { Config: [{ Subnet: '10.40.0.0/24', IPRange: '10.40.0.64/26' }] },
        })
      ).json().Id as string;

    it("a runtime's container (CNI): its interface name and container id make the endpoint; disconnect finds it by them", async () => {
      const id = await makeNetwork('pods');
      const connect = (containerId: string, ifName: string, netns = '/run/netns/cni-1') =>
        post('/networks/pods/connect', {
          Container: 'web',
          Sandbox: { Netns: netns },
          IfName: ifName,
          Runtime: { Kind: 'cni', ContainerID: containerId },
        });
      const r = await connect('c0ffee', 'net1');
      expect(r.statusCode, r.body).toBe(200);
      expect(local.attached[0]).toMatchObject({ ifName: 'net1', runtime: { kind: 'cni', containerId: 'c0ffee' } });
      const seen = (await app.inject({ method: 'GET', url: '/networks/pods' })).json().Containers[r.json().EndpointID];
      expect(seen.Runtime).toEqual({ Kind: 'cni', ContainerID: 'c0ffee', IfName: 'net1' });
      // The same container and interface again: refused. Another container named web: its own endpoint.
      expect((await connect('c0ffee', 'net1')).statusCode).toBe(409);
      const other = await connect('beef', 'eth0', '/run/netns/cni-2');
      expect(other.statusCode, other.body).toBe(200);
      // An interface name the container already has on a network is refused before anything is written.
      const taken = await connect('c0ffee', 'net1', '/run/netns/cni-1');
      expect(taken.json()).toMatchObject({ code: 'VEIL_ERR_ENDPOINT_EXISTS' });
      const clash = await post('/networks/pods/connect', {
        Container: 'side',
        Sandbox: { Netns: '/run/netns/cni-1' },
        IfName: 'net1',
      });
      expect([clash.statusCode, clash.json().message]).toEqual([409, expect.stringMatching(/interface net1 .* web's/)]);
      expect(
        (
          await post('/networks/pods/connect', {
            Container: 'x',
            IfName: 'eth0',
            Runtime: { Kind: 'cni', ContainerID: 'a' },
            Host: 'h2',
          })
        ).statusCode,
      ).toBe(400);
      const off = (body: unknown) => post('/networks/pods/disconnect', body);
      expect((await off({ Runtime: { Kind: 'cni', ContainerID: 'c0ffee' } })).statusCode).toBe(400); // IfName missing
      expect(
        (await off({ Container: 'web', Runtime: { Kind: 'cni', ContainerID: 'c0ffee' }, IfName: 'net1' })).statusCode,
      ).toBe(400);
      expect((await off({ Runtime: { Kind: 'cni', ContainerID: 'c0ffee' }, IfName: 'eth0' })).statusCode).toBe(404);
      expect((await off({ Runtime: { Kind: 'cni', ContainerID: 'c0ffee' }, IfName: 'net1' })).statusCode).toBe(204);
      expect((await store.listEndpoints(id)).items.map((e) => e.runtime?.containerId)).toEqual(['beef']);
    });

    it('connects a local container: allocates from the ip-range, derives the MAC, plumbs it before answering', async () => {
      const id = await makeNetwork('n1');
      const r = await post('/networks/n1/connect', {
        Container: 'web',
        Sandbox: { Netns: '/run/netns/web' },
        EndpointConfig: { Aliases: ['www', 'front'] },
      });
      expect(r.statusCode, r.body).toBe(200);
      const ep = r.json();
      expect(ep).toMatchObject({
        Name: 'web',
        Host: 'h1',
        Aliases: ['www', 'front'],
        Warning: '',
        EndpointID: endpointId(id, 'web'),
      });
      expect(ep.IPv4Address).toMatch(/^10\.40\.0\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\/24$/);
      expect(ep.MacAddress).toMatch(/^02:42:0a:28:00:[0-9a-f]{2}$/);
      expect(local.attached.map((e) => e.name)).toEqual(['web']);
      expect(local.attached[0]!.sandbox).toEqual({ netns: '/run/netns/web' });
      const inspect = (await app.inject({ method: 'GET', url: `/networks/${id}` })).json();
      expect(inspect.Containers[ep.EndpointID]).toMatchObject({
        Name: 'web',
        Host: 'h1',
        IPv4Address: ep.IPv4Address,
        IPv6Address: '',
      });
    });

    it('takes a requested free IP and MAC; refuses a taken IP (409) and a second connect of the same name (409)', async () => {
      await makeNetwork('n2');
      const a = await post('/networks/n2/connect', {
        Container: 'a',
        Sandbox: { Pid: 4242 },
        EndpointConfig: { IPAMConfig: { IPv4Address: '10.40.0.9' }, MacAddress: '02:AA:BB:CC:DD:EE' },
      });
      expect(a.statusCode, a.body).toBe(200);
      expect(a.json()).toMatchObject({ IPv4Address: '10.40.0.9/24', MacAddress: '02:aa:bb:cc:dd:ee' });
      const taken = await post('/networks/n2/connect', {
        Container: 'b',
        Sandbox: { Pid: 4242 },
        EndpointConfig: { IPAMConfig: { IPv4Address: '10.40.0.9' } },
      });
      expect([taken.statusCode, taken.json().code]).toEqual([409, 'VEIL_ERR_IP_TAKEN']);
      const twice = await post('/networks/n2/connect', { Container: 'a', Sandbox: { Pid: 4242 } });
      expect([twice.statusCode, twice.json().code]).toEqual([409, 'VEIL_ERR_ENDPOINT_EXISTS']);
    });

    it('connects into one container at the same time get eth0, eth1, eth2 (none twice)', async () => {
      for (const [i, n] of ['m1', 'm2', 'm3'].entries())
        expect(
          (await post('/networks', { Name: n, IPAM: { Config: [{ Subnet: `10.5${i}.0.0/24` }] } })).statusCode,
        ).toBe(201);
      // A slow store write: each connect would otherwise pick its name before the others' endpoints exist.
      const create = store.createEndpoint.bind(store);
      store.createEndpoint = async (spec) => {
        await new Promise((r) => setTimeout(r, 20));
        return create(spec);
      };
      const replies = await Promise.all(
        ['m1', 'm2', 'm3'].map((n) => post(`/networks/${n}/connect`, { Container: 'multi', Sandbox: { Pid: 777 } })),
      );
      expect(replies.map((r) => r.statusCode)).toEqual([200, 200, 200]);
      expect(local.attached.map((e) => e.ifName).sort()).toEqual(['eth0', 'eth1', 'eth2']);
    });

    it("a container on another host is recorded for that host's gateway to plumb; this host plumbs nothing", async () => {
      await makeNetwork('n3');
      const r = await post('/networks/n3/connect', {
        Container: 'remote',
        Host: 'h2',
        Sandbox: { Netns: '/run/netns/r' },
      });
      expect(r.statusCode, r.body).toBe(200);
      expect(r.json().Host).toBe('h2');
      expect(local.attached).toEqual([]);
      const unknown = await post('/networks/n3/connect', { Container: 'ghost', Host: 'h9' });
      expect([unknown.statusCode, unknown.json().code]).toEqual([404, 'VEIL_ERR_HOST_NOT_FOUND']);
    });

    it('a failed plumbing leaves no state: the record and the IP are gone, the answer says why', async () => {
      await makeNetwork('n4');
      const before = await store.dump();
      local.failNext = true;
      const r = await post('/networks/n4/connect', { Container: 'web', Sandbox: { Netns: '/run/netns/gone' } });
      expect(r.statusCode).toBe(422);
      expect(r.json()).toMatchObject({ code: 'VEIL_ERR_ATTACH_FAILED' });
      expect(r.json().message).toMatch(/gone/);
      expect(await store.dump()).toEqual(before);
    });

    const invalid: Array<[string, unknown, number, RegExp]> = [
      ['no container name', { Sandbox: { Pid: 4242 } }, 400, /Container/],
      ['a bad container name', { Container: '../x', Sandbox: { Pid: 4242 } }, 400, /Container/],
      ['a local container without a sandbox', { Container: 'x' }, 400, /Sandbox/],
      ['a relative netns path', { Container: 'x', Sandbox: { Netns: 'run/netns/x' } }, 400, /Netns/],
      ["pid 1 (the host's init, never a container)", { Container: 'x', Sandbox: { Pid: 1 } }, 400, /Pid/],
      ['both netns and pid', { Container: 'x', Sandbox: { Netns: '/run/netns/x', Pid: 3 } }, 400, /Sandbox/],
      [
        'an IP outside the subnet',
        { Container: 'x', Sandbox: { Pid: 4242 }, EndpointConfig: { IPAMConfig: { IPv4Address: '10.41.0.9' } } },
        400,
        /not in 10\.40\.0\.0\/24/,
      ],
      [
        'the gateway address',
        { Container: 'x', Sandbox: { Pid: 4242 }, EndpointConfig: { IPAMConfig: { IPv4Address: '10.40.0.1' } } },
        400,
        /gateway/,
      ],
      [
        'a malformed MAC',
        { Container: 'x', Sandbox: { Pid: 4242 }, EndpointConfig: { MacAddress: '02:42' } },
        400,
        /MacAddress/,
      ],
      [
        'a multicast MAC',
        { Container: 'x', Sandbox: { Pid: 4242 }, EndpointConfig: { MacAddress: '01:00:5e:00:00:01' } },
        400,
        /mac/i,
      ],
      ['an unknown field', { Container: 'x', Sandbox: { Pid: 4242 }, Bogus: true }, 400, /additional properties/],
    ];
    for (const [what, body, status, message] of invalid) {
      it(`refuses ${what} (${status}) and changes nothing`, async () => {
        await makeNetwork('bad');
        const before = await store.dump();
        const r = await post('/networks/bad/connect', body);
        expect(r.statusCode, r.body).toBe(status);
        expect(r.json().code).toMatch(/^VEIL_ERR_/);
        expect(r.json().message).toMatch(message);
        expect(await store.dump()).toEqual(before);
        expect(local.attached).toEqual([]);
      });
    }

    const badNetworks: Array<[string, unknown, RegExp]> = [
      [
        'a subnet overlapping another network',
        { Name: 'x', IPAM: { Config: [{ Subnet: '10.40.0.128/25' }] } },
        /overlaps/,
      ],
      ['a taken name', { Name: 'taken', IPAM: { Config: [{ Subnet: '10.99.0.0/24' }] } }, /name already in use/],
      [
        'a gateway outside the subnet',
        { Name: 'x', IPAM: { Config: [{ Subnet: '10.98.0.0/24', Gateway: '10.97.0.1' }] } },
        /gateway/i,
      ],
      [
        'an ip-range outside the subnet',
        { Name: 'x', IPAM: { Config: [{ Subnet: '10.98.0.0/24', IPRange: '10.97.0.0/25' }] } },
        /range/i,
      ],
      ['a /31', { Name: 'x', IPAM: { Config: [{ Subnet: '10.98.0.0/31' }] } }, /./],
      [
        'strict without encrypted',
        { Name: 'x', Options: { strict: '' }, IPAM: { Config: [{ Subnet: '10.98.0.0/24' }] } },
        /strict/,
      ],
    ];
    for (const [what, body, message] of badNetworks) {
      it(`network create with ${what} is refused with a 4xx and changes nothing`, async () => {
        await makeNetwork('taken');
        const before = await store.dump();
        const r = await post('/networks', body);
        expect(r.statusCode, r.body).toBeGreaterThanOrEqual(400);
        expect(r.statusCode).toBeLessThan(500);
        expect(r.json().message).toMatch(message);
        expect(await store.dump()).toEqual(before);
      });
    }

    it('connect to an unknown network is a 404', async () => {
      const r = await post('/networks/nope/connect', { Container: 'x', Sandbox: { Pid: 4242 } });
      expect([r.statusCode, r.json().code]).toEqual([404, 'VEIL_ERR_NOT_FOUND']);
    });

    it('disconnect frees the IP (the next container gets it) and detaches a local container', async () => {
      await makeNetwork('n5');
      const first = (
        await post('/networks/n5/connect', {
          Container: 'a',
          Sandbox: { Pid: 4242 },
          EndpointConfig: { IPAMConfig: { IPv4Address: '10.40.0.70' } },
        })
      ).json();
      const d = await post('/networks/n5/disconnect', { Container: 'a' });
      expect(d.statusCode, d.body).toBe(204);
      expect(local.detached.map((e) => e.name)).toEqual(['a']);
      const again = await post('/networks/n5/connect', {
        Container: 'b',
        Sandbox: { Pid: 4242 },
        EndpointConfig: { IPAMConfig: { IPv4Address: '10.40.0.70' } },
      });
      expect(again.json().IPv4Address).toBe(first.IPv4Address);
      const missing = await post('/networks/n5/disconnect', { Container: 'a' });
      expect([missing.statusCode, missing.json().code]).toEqual([404, 'VEIL_ERR_ENDPOINT_NOT_FOUND']);
    });

    describe('Windows hosts (they cannot encrypt overlay traffic)', () => {
      it('a container on a Windows host connecting to an encrypted network gets a Warning; a plain network none', async () => {
        await store.registerHost(sampleHost('win1', { os: 'windows' }), 30);
        await makeNetwork('enc');
        await post('/networks', { Name: 'plain', IPAM: { Config: [{ Subnet: '10.50.0.0/24' }] } });
        const enc = (await post('/networks/enc/connect', { Container: 'iis', Host: 'win1' })).json();
        expect(enc.Warning).toMatch(/Windows hosts cannot encrypt overlay traffic.*win1.*enc.*not be protected/);
        const plain = (await post('/networks/plain/connect', { Container: 'iis', Host: 'win1' })).json();
        expect(plain.Warning).toBe('');
      });

      it('a strict encrypted network refuses the Windows container and writes nothing', async () => {
        await makeNetwork('strict1', { encrypted: '', strict: '' });
        await store.registerHost(sampleHost('win2', { os: 'Windows' }), 30);
        const before = await store.dump();
        const r = await post('/networks/strict1/connect', { Container: 'iis', Host: 'win2' });
        expect([r.statusCode, r.json().code]).toEqual([409, 'VEIL_ERR_STRICT_UNENCRYPTED_HOST']);
        expect(await store.dump()).toEqual(before);
      });

      it('GET /hosts lists every live host, and flags a Windows host while encrypted networks exist', async () => {
        await store.registerHost(sampleHost('win3', { os: 'windows' }), 30);
        let hosts = (await app.inject({ method: 'GET', url: '/hosts' })).json();
        expect(hosts.map((h: { Id: string }) => h.Id).sort()).toEqual(['h1', 'h2', 'win3']);
        expect(hosts.find((h: { Id: string }) => h.Id === 'win3').Warning).toBeUndefined();
        await makeNetwork('enc2');
        hosts = (await app.inject({ method: 'GET', url: '/hosts' })).json();
        expect(hosts.find((h: { Id: string }) => h.Id === 'win3').Warning).toMatch(/win3.*enc2/);
        expect(hosts.find((h: { Id: string }) => h.Id === 'h1').Warning).toBeUndefined();
        expect(hosts.find((h: { Id: string }) => h.Id === 'h1')).toMatchObject({
          Index: expect.any(Number),
          OS: 'linux',
          PublicKey: expect.stringMatching(/^[0-9a-f]{64}$/),
        });
      });
    });
  });
}
