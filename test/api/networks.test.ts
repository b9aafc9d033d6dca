import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/api/app.js';
import { MemoryBackend } from '../../src/store/memory.js';
import type { Store } from '../../src/store/types.js';
import type { GatewayStatus } from '../../src/vxlan/gateway.js';

const emptyStatus: GatewayStatus = {
  host: 'h1',
  peers: [],
  networks: [],
  pairs: [],
  unattributedDrops: {},
  sendFailures: 0,
};
const KEY = 'ab'.repeat(32);

let store: Store;
let app: ReturnType<typeof buildApp>;

beforeEach(() => {
  store = new MemoryBackend().client();
  app = buildApp({ gatewayStatus: () => emptyStatus, store });
});
afterEach(async () => {
  await app.close();
  await store.close();
});

const create = (body: unknown) => app.inject({ method: 'POST', url: '/networks', payload: body as object });
const encrypted = (name: string, extra: Record<string, string> = {}) => ({
  Name: name,
  Driver: 'overlay',
  Attachable: true,
  Options: { encrypted: '', ...extra },
  Labels: { team: 'a' },
  IPAM: { Config: [{ Subnet: '10.70.0.0/24', Gateway: '10.70.0.1', IPRange: '10.70.0.128/25' }] },
});
const registerHost = (id: string, os: string) =>
  store.registerHost(
    { id, address: '198.18.0.9', os, arch: 'amd64', version: '0.1.0', publicKey: KEY, incarnation: 'x' },
    30,
  );

describe('networks API (Docker vocabulary)', () => {
  it('creates, lists, inspects (by id and by name) and removes an encrypted overlay', async () => {
    const r = await create(encrypted('secure'));
    expect(r.statusCode).toBe(201);
    const { Id, Warning } = r.json();
    expect(Id).toMatch(/^[0-9a-f]{64}$/);
    expect(Warning).toBe('');
    const list = (await app.inject({ method: 'GET', url: '/networks' })).json();
    expect(list).toHaveLength(1);
    for (const ref of [Id, 'secure']) {
      const n = (await app.inject({ method: 'GET', url: `/networks/${ref}` })).json();
      expect(n).toMatchObject({
        Name: 'secure',
        Id,
        Driver: 'overlay',
        Attachable: true,
        Encrypted: true,
        Options: { encrypted: '' },
        Labels: { team: 'a' },
        IPAM: {
          Driver: 'default',
          Config: [{ Subnet: '10.70.0.0/24', Gateway: '10.70.0.1', IPRange: '10.70.0.128/25' }],
        },
      });
      expect(n.VNI).toBeGreaterThanOrEqual(4096);
    }
    expect((await app.inject({ method: 'DELETE', url: `/networks/${Id}` })).statusCode).toBe(204);
    expect((await app.inject({ method: 'GET', url: `/networks/${Id}` })).statusCode).toBe(404);
  });

  it('a plain overlay is not encrypted; `encrypted: "false"` is plain too', async () => {
    const a = await create({ Name: 'p1', IPAM: { Config: [{ Subnet: '10.71.0.0/24' }] } });
    const b = await create({
      Name: 'p2',
      Options: { encrypted: 'false' },
      IPAM: { Config: [{ Subnet: '10.72.0.0/24' }] },
    });
    for (const r of [a, b])
      expect((await app.inject({ method: 'GET', url: `/networks/${r.json().Id}` })).json().Encrypted).toBe(false);
  });

  it('answers 409 with a registry code for a taken name and an overlapping subnet', async () => {
    await create(encrypted('one'));
    const dup = await create({ ...encrypted('one'), IPAM: { Config: [{ Subnet: '10.90.0.0/24' }] } });
    expect(dup.statusCode).toBe(409);
    expect(dup.json().code).toBe('VEIL_ERR_NETWORK_NAME_TAKEN');
    const overlap = await create({ ...encrypted('two'), IPAM: { Config: [{ Subnet: '10.70.0.0/16' }] } });
    expect(overlap.statusCode).toBe(409);
    expect(overlap.json().code).toBe('VEIL_ERR_SUBNET_OVERLAP');
  });

  const invalid: Array<[string, unknown, RegExp]> = [
    ['no name', { IPAM: { Config: [{ Subnet: '10.80.0.0/24' }] } }, /Name/],
    ['another driver', { Name: 'x', Driver: 'bridge', IPAM: { Config: [{ Subnet: '10.80.0.0/24' }] } }, /Driver/],
    ['no subnet', { Name: 'x' }, /Subnet is required/],
    ['not a CIDR', { Name: 'x', IPAM: { Config: [{ Subnet: '10.80.0.0' }] } }, /Subnet/],
    [
      'gateway outside the subnet',
      { Name: 'x', IPAM: { Config: [{ Subnet: '10.80.0.0/24', Gateway: '10.81.0.1' }] } },
      /gateway/i,
    ],
    [
      'range outside the subnet',
      { Name: 'x', IPAM: { Config: [{ Subnet: '10.80.0.0/24', IPRange: '10.81.0.0/25' }] } },
      /range/i,
    ],
    ['no room for two endpoints', { Name: 'x', IPAM: { Config: [{ Subnet: '10.80.0.0/31' }] } }, /./],
    ['unknown field', { Name: 'x', Bogus: 1, IPAM: { Config: [{ Subnet: '10.80.0.0/24' }] } }, /additional properties/],
    // Subnets that cannot be an overlay's (special-purpose ranges, RFC 6890), each with its reason.
    [
      'every address',
      { Name: 'x', IPAM: { Config: [{ Subnet: '0.0.0.0/0' }] } },
      /0\.0\.0\.0\/0 overlaps .*every address/,
    ],
    ['"this network"', { Name: 'x', IPAM: { Config: [{ Subnet: '0.0.0.0/24' }] } }, /"this network"/],
    ['loopback', { Name: 'x', IPAM: { Config: [{ Subnet: '127.0.0.0/24' }] } }, /loopback/],
    ['link-local', { Name: 'x', IPAM: { Config: [{ Subnet: '169.254.47.0/24' }] } }, /link-local .*veil uses it/],
    ['a range around link-local', { Name: 'x', IPAM: { Config: [{ Subnet: '169.0.0.0/8' }] } }, /169\.254\.0\.0\/16/],
    ['multicast', { Name: 'x', IPAM: { Config: [{ Subnet: '239.1.0.0/16' }] } }, /multicast/],
    ['reserved', { Name: 'x', IPAM: { Config: [{ Subnet: '240.0.0.0/24' }] } }, /reserved/],
    ['the broadcast address', { Name: 'x', IPAM: { Config: [{ Subnet: '255.255.255.252/30' }] } }, /broadcast/],
    [
      'IPv6 (not supported)',
      { Name: 'x', EnableIPv6: true, IPAM: { Config: [{ Subnet: '10.80.0.0/24' }] } },
      /EnableIPv6/,
    ],
  ];
  for (const [what, body, message] of invalid) {
    it(`refuses ${what} with a 4xx that says what is wrong, and changes nothing`, async () => {
      const before = await store.dump();
      const r = await create(body);
      expect(r.statusCode).toBeGreaterThanOrEqual(400);
      expect(r.statusCode).toBeLessThan(500);
      expect(r.json().code).toMatch(/^VEIL_ERR_/);
      expect(r.json().message).toMatch(message);
      expect(await store.dump()).toEqual(before);
    });
  }

  it('refuses to delete a network with endpoints (409), then deletes it once they are gone', async () => {
    const { Id } = (await create(encrypted('busy'))).json();
    const ep = await store.createEndpoint({ networkId: Id, name: 'c1', hostId: 'h1' });
    const r = await app.inject({ method: 'DELETE', url: `/networks/${Id}` });
    expect(r.statusCode).toBe(409);
    expect(r.json().code).toBe('VEIL_ERR_NETWORK_HAS_ENDPOINTS');
    await store.deleteEndpoint(Id, ep.id);
    expect((await app.inject({ method: 'DELETE', url: `/networks/${Id}` })).statusCode).toBe(204);
  });
});

describe('Windows hosts and encrypted networks', () => {
  it('warns when an encrypted network is created while Windows hosts are registered, naming them', async () => {
    await registerHost('linux-1', 'linux');
    await registerHost('win-1', 'windows');
    const r = await create(encrypted('mixed'));
    expect(r.statusCode).toBe(201);
    expect(r.json().Warning).toMatch(/Windows hosts cannot encrypt overlay traffic/);
    expect(r.json().Warning).toContain('win-1');
    expect(r.json().Warning).not.toContain('linux-1');
    // A plain network draws no warning.
    expect((await create({ Name: 'plain', IPAM: { Config: [{ Subnet: '10.73.0.0/24' }] } })).json().Warning).toBe('');
  });

  it('with the strict option refuses instead of warning, and writes nothing', async () => {
    await registerHost('win-1', 'windows');
    const before = await store.dump();
    const r = await create(encrypted('strict-net', { strict: '' }));
    expect(r.statusCode).toBe(409);
    expect(r.json().code).toBe('VEIL_ERR_STRICT_UNENCRYPTED_HOST');
    expect(await store.dump()).toEqual(before);
  });
});
