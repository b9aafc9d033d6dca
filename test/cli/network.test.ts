import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/api/app.js';
import { parseArgs, parseKeyValues, UsageError } from '../../src/cli/args.js';
import { ApiClient, DEFAULT_API, parseApiAddress, resolveClientOptions } from '../../src/cli/client.js';
import { renderTable } from '../../src/cli/format.js';
import { runHost, runNetwork, splitGlobalOptions } from '../../src/cli/network.js';
import { MemoryBackend } from '../../src/store/memory.js';
import type { Store } from '../../src/store/types.js';
import { makePki, pem, type TestPki } from '../tls/pki.js';
import { apiStub, cli, listenUnix, STUB_HOSTS, type StubRequest } from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'veil-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const KEY = 'ab'.repeat(32);
const MISSING_SOCKET = `unix:${join(dir, 'nobody-listens.sock')}`;

describe('veil network against the real API (buildApp + memory store on a unix socket)', () => {
  let store: Store;
  let app: FastifyInstance;
  let api: string;
  let n = 0;
  const net = (...argv: string[]) => cli(runNetwork, ['--api', api, ...argv]);

  beforeEach(async () => {
    store = new MemoryBackend().client();
    app = buildApp({
      gatewayStatus: () => ({ host: 'h1', peers: [], networks: [], pairs: [], unattributedDrops: {}, sendFailures: 0 }),
      store,
    });
    api = await listenUnix(app, dir, `real-${n++}`);
  });
  afterEach(async () => {
    await app.close();
    await store.close();
  });

  it('create prints the Id; --opt encrypted becomes {"encrypted": ""}; labels and opts parse k=v and bare k', async () => {
    const r = await net(
      'create',
      '-d',
      'overlay',
      '--opt',
      'encrypted',
      '-o',
      'com.example.mtu=1400',
      '-ostrict',
      '--attachable',
      '--subnet',
      '10.0.9.0/24',
      '--gateway',
      '10.0.9.254',
      '--ip-range',
      '10.0.9.128/25',
      '--label',
      'team=net',
      '--label',
      'tier',
      '--label',
      'expr=a=b',
      'front',
    );
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(/^[0-9a-f]{64}\n$/);
    const [inspected] = JSON.parse((await net('inspect', 'front')).stdout);
    expect(inspected).toMatchObject({
      Id: r.stdout.trim(),
      Name: 'front',
      Driver: 'overlay',
      Encrypted: true,
      Attachable: true,
      Internal: false,
      Options: { encrypted: '', 'com.example.mtu': '1400', strict: '' },
      Labels: { team: 'net', tier: '', expr: 'a=b' },
      IPAM: { Config: [{ Subnet: '10.0.9.0/24', Gateway: '10.0.9.254', IPRange: '10.0.9.128/25' }] },
    });
  });

  it('ls prints a table with NETWORK ID (12 digits), NAME, DRIVER, SCOPE, ENCRYPTED, VNI, SUBNET, sorted by name', async () => {
    const b = (await net('create', '--subnet', '10.0.20.0/24', 'plain-b')).stdout.trim();
    const a = (await net('create', '--opt', 'encrypted', '--subnet', '10.0.10.0/24', 'secure-a')).stdout.trim();
    const r = await net('ls');
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    const cells = lines.map((l) => l.split(/ {3,}/));
    expect(cells[0]).toEqual(['NETWORK ID', 'NAME', 'DRIVER', 'SCOPE', 'ENCRYPTED', 'VNI', 'SUBNET']);
    const listed = JSON.parse((await net('ls', '--format', 'json')).stdout) as Array<{ Id: string; VNI: number }>;
    const vni = (id: string) => String(listed.find((x) => x.Id === id)!.VNI);
    expect(cells[1]).toEqual([b.slice(0, 12), 'plain-b', 'overlay', 'global', 'no', vni(b), '10.0.20.0/24']);
    expect(cells[2]).toEqual([a.slice(0, 12), 'secure-a', 'overlay', 'global', 'yes', vni(a), '10.0.10.0/24']);
    // Columns line up: each header starts where its values start.
    for (const header of ['NAME', 'DRIVER', 'VNI', 'SUBNET']) {
      const col = lines[0]!.indexOf(header);
      expect(lines[1]![col - 1]).toBe(' ');
      expect(lines[1]![col]).not.toBe(' ');
    }
  });

  it('ls --format json parses, before or after the subcommand, and through veil.ts global options', async () => {
    await net('create', '--subnet', '10.0.30.0/24', 'one');
    for (const argv of [
      ['ls', '--format', 'json'],
      ['--format', 'json', 'ls'],
      ['ls', '--format=json'],
    ]) {
      const r = await net(...argv);
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual([
        expect.objectContaining({ Name: 'one', Driver: 'overlay', Encrypted: false }),
      ]);
    }
    const split = splitGlobalOptions(['--api', api, '--format', 'json', 'network', 'ls']);
    expect(split).toEqual({ group: 'network', argv: ['--api', api, '--format', 'json', 'ls'] });
    expect(JSON.parse((await cli(runNetwork, split.argv)).stdout)).toHaveLength(1);
  });

  it('inspect prints a JSON array; an unknown network is reported with its code and exits 1', async () => {
    await net('create', '--subnet', '10.0.40.0/24', 'x');
    await net('create', '--subnet', '10.0.41.0/24', 'y');
    const both = await net('inspect', 'x', 'y');
    expect(both.code).toBe(0);
    expect(JSON.parse(both.stdout).map((n: { Name: string }) => n.Name)).toEqual(['x', 'y']);

    const missing = await net('inspect', 'x', 'nope');
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stdout).map((n: { Name: string }) => n.Name)).toEqual(['x']);
    expect(missing.stderr).toBe('veil: not found: network nope (VEIL_ERR_NOT_FOUND)\n');
  });

  it('rm of several continues past a failure, prints each name removed, exits 1', async () => {
    await net('create', '--subnet', '10.0.50.0/24', 'r1');
    await net('create', '--subnet', '10.0.51.0/24', 'r2');
    const r = await net('rm', 'r1', 'ghost', 'r2');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('r1\nr2\n');
    expect(r.stderr).toBe('veil: not found: network ghost (VEIL_ERR_NOT_FOUND)\n');
    expect(JSON.parse((await net('ls', '--format', 'json')).stdout)).toEqual([]);
  });

  it('rm refuses a network with endpoints (409 VEIL_ERR_NETWORK_HAS_ENDPOINTS)', async () => {
    const id = (await net('create', '--subnet', '10.0.60.0/24', 'busy')).stdout.trim();
    await store.createEndpoint({ networkId: id, name: 'c1', hostId: 'h1' });
    const r = await net('rm', 'busy');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^veil: network has active endpoints: .* \(VEIL_ERR_NETWORK_HAS_ENDPOINTS\)\n$/);
  });

  it('create prints the API warning to stderr (WARNING: ...) and the Id to stdout; strict is refused', async () => {
    await store.registerHost(
      {
        id: 'win-1',
        address: '198.18.0.9',
        os: 'windows',
        arch: 'amd64',
        version: '0.1.0',
        publicKey: KEY,
        incarnation: 'x',
      },
      30,
    );
    const r = await net('create', '--opt', 'encrypted', '--subnet', '10.0.70.0/24', 'mixed');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^[0-9a-f]{64}\n$/);
    expect(r.stderr).toBe(
      'WARNING: Windows hosts cannot encrypt overlay traffic: traffic of the Windows host(s) win-1 on this encrypted network will not be protected\n',
    );

    const json = await net(
      'create',
      '--opt',
      'encrypted',
      '--subnet',
      '10.0.71.0/24',
      '--format',
      'json',
      'mixed-json',
    );
    expect(JSON.parse(json.stdout)).toEqual({
      Id: expect.stringMatching(/^[0-9a-f]{64}$/),
      Warning: expect.stringContaining('win-1'),
    });
    expect(json.stderr).toMatch(/^WARNING: /);

    const strict = await net('create', '-o', 'encrypted', '-o', 'strict', '--subnet', '10.0.72.0/24', 'mixed-strict');
    expect(strict).toMatchObject({ code: 1, stdout: '' });
    expect(strict.stderr).toBe(
      'veil: strict network: a member host cannot encrypt overlay traffic: Windows host(s) win-1 are registered (VEIL_ERR_STRICT_UNENCRYPTED_HOST)\n',
    );
  });

  it("API refusals exit 1 with the API's code: a taken name, no subnet, an invalid subnet", async () => {
    await net('create', '--subnet', '10.0.80.0/24', 'dup');
    const dup = await net('create', '--subnet', '10.0.81.0/24', 'dup');
    expect(dup.code).toBe(1);
    expect(dup.stderr).toMatch(/\(VEIL_ERR_NETWORK_NAME_TAKEN\)\n$/);
    const noSubnet = await net('create', 'nosubnet');
    expect(noSubnet.code).toBe(1);
    expect(noSubnet.stderr).toMatch(/no default address pool.*\(VEIL_ERR_REQUEST_INVALID\)\n$/);
    const bad = await net('create', '--subnet', 'ten/8', 'bad');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/\(VEIL_ERR_REQUEST_INVALID\)\n$/);
  });

  // The connect, disconnect and hosts routes have landed in src/api/networks.ts: the same commands
  // against them (the stub below checks the exact request bodies).
  it('connect / inspect / disconnect / host ls against the real routes', async () => {
    const host = (id: string, os: string, address: string) =>
      store.registerHost({ id, address, os, arch: 'amd64', version: '0.1.0', publicKey: KEY, incarnation: 'x' }, 30);
    await host('h1', 'linux', '198.18.0.1');
    await net('create', '--opt', 'encrypted', '--subnet', '10.0.90.0/24', 'front');
    await host('win-1', 'windows', '198.18.0.2');

    const c1 = await net('connect', '--host', 'h1', '--alias', 'web', '--netns', '/run/netns/c1', 'front', 'c1');
    expect(c1).toEqual({ code: 0, stdout: '10.0.90.2\n', stderr: '' });
    const c2 = await net('connect', '--host', 'win-1', '--ip', '10.0.90.50', 'front', 'c2');
    expect(c2.code).toBe(0);
    expect(c2.stdout).toBe('10.0.90.50\n');
    expect(c2.stderr).toMatch(/^WARNING: Windows hosts cannot encrypt overlay traffic: .*win-1.*\n$/);

    const [inspected] = JSON.parse((await net('inspect', 'front')).stdout);
    expect(Object.values(inspected.Containers)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ Name: 'c1', Host: 'h1', IPv4Address: '10.0.90.2/24', Aliases: ['web'] }),
        expect.objectContaining({ Name: 'c2', Host: 'win-1', IPv4Address: '10.0.90.50/24' }),
      ]),
    );
    const busy = await net('rm', 'front');
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/\(VEIL_ERR_NETWORK_HAS_ENDPOINTS\)\n$/);
    const taken = await net('connect', '--host', 'h1', '--ip', '10.0.90.50', 'front', 'c3');
    expect(taken.code).toBe(1);
    expect(taken.stderr).toMatch(/\(VEIL_ERR_IP_TAKEN\)\n$/);

    const hosts = await cli(runHost, ['ls', '--api', api]);
    expect(hosts.code).toBe(0);
    expect(
      hosts.stdout
        .trimEnd()
        .split('\n')
        .map((l) => l.split(/ {3,}/)),
    ).toEqual([
      ['HOST ID', 'INDEX', 'ADDRESS', 'OS', 'ARCH', 'VERSION'],
      ['h1', expect.stringMatching(/^\d+$/), '198.18.0.1', 'linux', 'amd64', '0.1.0'],
      ['win-1', expect.stringMatching(/^\d+$/), '198.18.0.2', 'windows', 'amd64', '0.1.0'],
    ]);
    expect(hosts.stderr).toMatch(/^WARNING: .*win-1.*front.*\n$/);

    expect(await net('disconnect', 'front', 'c1')).toEqual({ code: 0, stdout: '', stderr: '' });
    expect((await net('disconnect', '-f', 'front', 'c2')).code).toBe(0);
    const again = await net('disconnect', 'front', 'c1');
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/\(VEIL_ERR_ENDPOINT_NOT_FOUND\)\n$/);
    expect((await net('rm', 'front')).stdout).toBe('front\n');
  });

  it('ApiClient.request returns {status, body} and throws the API error for route-level callers', async () => {
    const client = new ApiClient({ address: api });
    expect(await client.request('GET', '/healthz')).toEqual({ status: 200, body: { status: 'ok' } });
    await expect(client.request('GET', '/networks/zzz')).rejects.toMatchObject({
      name: 'ApiError',
      code: 'VEIL_ERR_NOT_FOUND',
      status: 404,
    });
  });
});

describe('veil network connect / disconnect and veil host ls (against a test double of the API)', () => {
  let stub: ReturnType<typeof apiStub>;
  let api: string;
  let n = 0;
  const net = (...argv: string[]) => cli(runNetwork, ['--api', api, ...argv]);
  const bodies = (requests: StubRequest[]) => requests.map((r) => [r.method, r.url, r.body]);

  beforeEach(async () => {
    stub = apiStub();
    api = await listenUnix(stub.app, dir, `stub-${n++}`);
  });
  afterEach(() => stub.app.close());

  it('connect sends Docker flags as the connect body and prints the bare IP', async () => {
    const r = await net(
      'connect',
      '--ip',
      '10.0.9.7',
      '--alias',
      'web',
      '--alias',
      'www',
      '--mac',
      '02:42:0a:00:09:07',
      '--netns',
      '/run/netns/c1',
      '--host',
      'gw-b',
      'front',
      'c1',
    );
    expect(r).toEqual({ code: 0, stdout: '10.0.9.7\n', stderr: '' });
    expect(bodies(stub.requests)).toEqual([
      [
        'POST',
        '/networks/front/connect',
        {
          Container: 'c1',
          Host: 'gw-b',
          Sandbox: { Netns: '/run/netns/c1' },
          EndpointConfig: {
            IPAMConfig: { IPv4Address: '10.0.9.7' },
            Aliases: ['web', 'www'],
            MacAddress: '02:42:0a:00:09:07',
          },
        },
      ],
    ]);
  });

  it('connect with --pid, and with nothing but the names', async () => {
    expect((await net('connect', '--pid', '4242', 'front', 'c2')).code).toBe(0);
    expect((await net('connect', 'front', 'c3')).stdout).toBe('10.0.9.2\n');
    expect(stub.requests.map((r) => r.body)).toEqual([
      { Container: 'c2', Sandbox: { Pid: 4242 } },
      { Container: 'c3' },
    ]);
  });

  it('connect prints the warning to stderr; --format json prints the endpoint', async () => {
    const r = await net('connect', 'secure', 'c1');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('10.0.9.2\n');
    expect(r.stderr).toMatch(/^WARNING: Windows hosts cannot encrypt overlay traffic: .*win-1.*\n$/);
    const json = await net('--format', 'json', 'connect', 'front', 'c1');
    expect(JSON.parse(json.stdout)).toMatchObject({
      EndpointID: 'e'.repeat(64),
      Name: 'c1',
      IPv4Address: '10.0.9.2/24',
      Host: 'gw-a',
    });
  });

  it('connect / disconnect on an unknown network exit 1 with the code', async () => {
    for (const argv of [
      ['connect', 'nope', 'c1'],
      ['disconnect', 'nope', 'c1'],
    ]) {
      const r = await net(...argv);
      expect(r).toEqual({ code: 1, stdout: '', stderr: 'veil: not found: network nope (VEIL_ERR_NOT_FOUND)\n' });
    }
  });

  it('disconnect sends {Container} and, with -f/--force, Force: true; prints nothing', async () => {
    expect(await net('disconnect', 'front', 'c1')).toEqual({ code: 0, stdout: '', stderr: '' });
    expect((await net('disconnect', '-f', 'front', 'c2')).code).toBe(0);
    expect((await net('disconnect', 'front', 'c3', '--force')).code).toBe(0);
    expect(bodies(stub.requests)).toEqual([
      ['POST', '/networks/front/disconnect', { Container: 'c1' }],
      ['POST', '/networks/front/disconnect', { Container: 'c2', Force: true }],
      ['POST', '/networks/front/disconnect', { Container: 'c3', Force: true }],
    ]);
  });

  it('host ls prints HOST ID, INDEX, ADDRESS, OS, ARCH, VERSION by index; --format json parses', async () => {
    const r = await cli(runHost, ['ls', '--api', api]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(`WARNING: ${STUB_HOSTS[2]!.Warning}\n`);
    expect(
      r.stdout
        .trimEnd()
        .split('\n')
        .map((l) => l.split(/ {3,}/)),
    ).toEqual([
      ['HOST ID', 'INDEX', 'ADDRESS', 'OS', 'ARCH', 'VERSION'],
      ['gw-a', '1', '198.18.0.1', 'linux', 'amd64', '0.1.0'],
      ['gw-b', '2', '198.18.0.2', 'linux', 'arm64', '0.1.0'],
      ['win-1', '3', '198.18.0.3', 'windows', 'amd64', '0.1.0'],
    ]);
    const json = await cli(runHost, ['--api', api, '--format', 'json', 'ls']);
    expect(JSON.parse(json.stdout)).toEqual([STUB_HOSTS[1], STUB_HOSTS[0], STUB_HOSTS[2]]);
  });
});

describe('usage errors exit 2 without calling the API', () => {
  // Every case points at a socket nobody listens on: reaching for the API would exit 1, not 2.
  const net = (...argv: string[]) => cli(runNetwork, ['--api', MISSING_SOCKET, ...argv]);

  it.each([
    [['create', '--bogus', 'x'], 'unknown flag: --bogus', 'usage: veil network create [OPTIONS] NAME'],
    [['create', '-z', 'x'], "unknown shorthand flag: 'z' in -z", 'usage: veil network create'],
    [['create'], '"veil network create" needs exactly 1 argument(s)', 'usage: veil network create'],
    [['create', 'a', 'b'], 'takes at most 1 argument(s), got: a b', 'usage: veil network create'],
    [['create', '--subnet'], '--subnet needs a value (CIDR)', 'usage: veil network create'],
    [
      ['create', '--subnet', '10.1.0.0/24', '--subnet', '10.2.0.0/24', 'x'],
      '--subnet given more than once',
      'usage: veil network create',
    ],
    [
      ['create', '-d', 'bridge', 'x'],
      '--driver bridge: veil networks use the overlay driver',
      'usage: veil network create',
    ],
    [['create', '--gateway', '10.0.0.1', 'x'], '--gateway and --ip-range need --subnet', 'usage: veil network create'],
    [['create', '--opt', '=v', 'x'], '--opt "=v": expected key=value or key', 'usage: veil network create'],
    [['create', '--attachable=maybe', 'x'], '--attachable takes no value', 'usage: veil network create'],
    [['ls', 'extra'], '"veil network ls" takes no argument(s), got: extra', 'usage: veil network ls'],
    [['ls', '--format', 'yaml'], '--format yaml: expected table or json', 'usage: veil network ls'],
    [['inspect'], 'needs at least 1 argument(s)', 'usage: veil network inspect'],
    [['inspect', '--format', 'table', 'x'], 'network inspect prints JSON only', 'usage: veil network inspect'],
    [['rm'], 'needs at least 1 argument(s)', 'usage: veil network rm'],
    [['connect', 'front'], 'needs exactly 2 argument(s)', 'usage: veil network connect [OPTIONS] NETWORK CONTAINER'],
    [
      ['connect', '--netns', '/run/netns/a', '--pid', '1', 'front', 'c'],
      'give --netns or --pid, not both',
      'usage: veil network connect',
    ],
    [['connect', '--pid', 'abc', 'front', 'c'], '--pid abc: expected a process id', 'usage: veil network connect'],
    [
      ['connect', '--netns', 'rel/ns', 'front', 'c'],
      '--netns rel/ns: give an absolute path',
      'usage: veil network connect',
    ],
    [['disconnect', '--force=yes', 'front', 'c'], '--force takes no value', 'usage: veil network disconnect'],
    [['frobnicate'], 'unknown command "network frobnicate"', 'usage: veil network COMMAND'],
    [['--bogus', 'ls'], 'unknown flag: --bogus', 'usage: veil network COMMAND'],
    [[], 'veil network needs a command', 'usage: veil network COMMAND'],
  ])('veil network %j', async (argv, message, usage) => {
    const r = await net(...argv);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^veil: /);
    expect(r.stderr.split('\n')[0]).toContain(message);
    expect(r.stderr).toContain(usage);
  });

  it('a bad --api address, or TLS flags for a non-https address, are usage errors', async () => {
    for (const [api, message] of [
      ['tcp://127.0.0.1:1', 'expected unix:/path/to.sock, http://host:port or https://host:port'],
      ['unix:relative.sock', 'needs an absolute path'],
      ['http://127.0.0.1:1/v1', 'give only the scheme, host and port'],
    ]) {
      const r = await cli(runNetwork, ['ls', '--api', api!]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(message);
    }
    const tls = await cli(runNetwork, ['ls', '--api', MISSING_SOCKET, '--tls-ca', '/nonexistent/ca.pem']);
    expect(tls.code).toBe(2);
    expect(tls.stderr).toContain('--tls-ca applies to https:// API addresses only');
    const missingFile = await cli(runNetwork, [
      'ls',
      '--api',
      'https://127.0.0.1:1',
      '--tls-ca',
      join(dir, 'no-ca.pem'),
    ]);
    expect(missingFile.code).toBe(2);
    expect(missingFile.stderr).toContain(`--tls-ca ${join(dir, 'no-ca.pem')}: ENOENT`);
  });

  it('--help prints the usage to stdout and exits 0, per command and for the group', async () => {
    const create = await net('create', '--help');
    expect(create).toMatchObject({ code: 0, stderr: '' });
    expect(create.stdout).toContain('usage: veil network create [OPTIONS] NAME');
    for (const flag of [
      '-d, --driver DRIVER',
      '-o, --opt k=v',
      '--attachable',
      '--internal',
      '--subnet CIDR',
      '--gateway IP',
      '--ip-range CIDR',
      '--label k=v',
      '--api ADDR',
      '--tls-ca FILE',
      '--format table|json',
    ]) {
      expect(create.stdout).toContain(flag);
    }
    expect((await net('connect', '-h')).stdout).toContain('--netns PATH');
    expect((await net('--help')).stdout).toContain('usage: veil network COMMAND');
    expect((await cli(runHost, ['ls', '--help'])).stdout).toContain('usage: veil host ls');
  });
});

describe('reaching the API', () => {
  it('a missing socket exits 1 with the reachability message', async () => {
    const path = MISSING_SOCKET.slice('unix:'.length);
    const r = await cli(runNetwork, ['ls', '--api', MISSING_SOCKET]);
    expect(r).toEqual({
      code: 1,
      stdout: '',
      stderr: `veil: cannot reach the veil API at ${MISSING_SOCKET}: connect ENOENT ${path}; is the gateway running? (VEIL_ERR_API_UNREACHABLE)\n`,
    });
  });

  it('VEIL_API is used when --api is not given; --api wins over it', async () => {
    const fromEnv = await cli(runNetwork, ['ls'], { VEIL_API: MISSING_SOCKET });
    expect(fromEnv.stderr).toContain(`cannot reach the veil API at ${MISSING_SOCKET}:`);
    const other = `unix:${join(dir, 'other.sock')}`;
    const flag = await cli(runNetwork, ['ls', '--api', other], { VEIL_API: MISSING_SOCKET });
    expect(flag.stderr).toContain(`cannot reach the veil API at ${other}:`);
  });

  it('the default is unix:/run/veil/veil.sock; unix:///path (Docker form) is accepted', () => {
    expect(DEFAULT_API).toBe('unix:/run/veil/veil.sock');
    expect(resolveClientOptions({}, {})).toEqual({ address: 'unix:/run/veil/veil.sock' });
    expect(parseApiAddress('unix:///run/veil/veil.sock')).toEqual({ kind: 'unix', socketPath: '/run/veil/veil.sock' });
    expect(parseApiAddress('http://127.0.0.1:2375')).toEqual({ kind: 'http', hostname: '127.0.0.1', port: 2375 });
    expect(parseApiAddress('https://[::1]:8443')).toEqual({ kind: 'https', hostname: '::1', port: 8443 });
  });

  it('a refused TCP connection exits 1; rm stops at the first unreachable error instead of repeating it', async () => {
    const r = await cli(runNetwork, ['rm', 'a', 'b', 'c', '--api', 'http://127.0.0.1:1']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n')).toEqual([
      expect.stringMatching(
        /^veil: cannot reach the veil API at http:\/\/127\.0\.0\.1:1: connect ECONNREFUSED 127\.0\.0\.1:1; is the gateway running\? \(VEIL_ERR_API_UNREACHABLE\)$/,
      ),
    ]);
  });
});

describe('https with a client certificate (mutual TLS)', () => {
  let stub: ReturnType<typeof apiStub>;
  let api: string;
  let tls: { ca: string; clientCert: string; clientKey: string };

  beforeAll(async () => {
    const pki: TestPki = await makePki(dir);
    tls = { ca: pki.caCert, clientCert: pki.client.cert, clientKey: pki.client.key };
    stub = apiStub({ https: { key: pem(pki.server.key), cert: pem(pki.server.cert), ca: pem(pki.caCert) } });
    const address = await stub.app.listen({ host: '127.0.0.1', port: 0 });
    api = address.replace('http://', 'https://');
    expect(api).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });
  afterAll(() => stub?.app.close());

  it('host ls works with --tls-ca/--tls-cert/--tls-key, and with VEIL_TLS_* from the environment', async () => {
    const flags = await cli(runHost, [
      'ls',
      '--api',
      api,
      '--tls-ca',
      tls.ca,
      '--tls-cert',
      tls.clientCert,
      '--tls-key',
      tls.clientKey,
    ]);
    expect(flags.code).toBe(0);
    expect(flags.stdout).toContain('gw-a');
    const env = await cli(runHost, ['ls'], {
      VEIL_API: api,
      VEIL_TLS_CA: tls.ca,
      VEIL_TLS_CERT: tls.clientCert,
      VEIL_TLS_KEY: tls.clientKey,
    });
    expect(env).toMatchObject({ code: 0, stdout: flags.stdout });
  });

  it('without the CA, or without a client certificate, the API is unreachable (exit 1)', async () => {
    const noCa = await cli(runHost, ['ls', '--api', api, '--tls-cert', tls.clientCert, '--tls-key', tls.clientKey]);
    expect(noCa.code).toBe(1);
    expect(noCa.stderr).toMatch(
      /cannot reach the veil API at https:.*check --tls-ca, --tls-cert and --tls-key .*\(VEIL_ERR_API_UNREACHABLE\)\n$/,
    );
    const noCert = await cli(runHost, ['ls', '--api', api, '--tls-ca', tls.ca]);
    expect(noCert.code).toBe(1);
    expect(noCert.stderr).toMatch(
      /^veil: cannot reach the veil API at https:\S+: [^\n]*certificate required; check --tls-ca, [^\n]*\(VEIL_ERR_API_UNREACHABLE\)\n$/,
    );
    const half = await cli(runHost, ['ls', '--api', api, '--tls-cert', tls.clientCert]);
    expect(half.code).toBe(2);
    expect(half.stderr).toContain('--tls-cert and --tls-key go together');
  });
});

describe('args and format units', () => {
  it('parseArgs: --k v, --k=v, -k v, -kv, boolean clusters, lists, -- ends flags', () => {
    const specs = {
      opt: { kind: 'list', short: 'o', help: '' },
      force: { kind: 'boolean', short: 'f', help: '' },
      all: { kind: 'boolean', short: 'a', help: '' },
      name: { kind: 'string', short: 'n', help: '' },
    } as const;
    expect(
      parseArgs(['-fa', '-ok=v', '-o', 'x', '--opt=y=z', 'p1', '--name', 'n1', '--', '--not-a-flag'], specs),
    ).toEqual({
      flags: { force: true, all: true, opt: ['k=v', 'x', 'y=z'], name: 'n1' },
      positionals: ['p1', '--not-a-flag'],
      help: false,
    });
    expect(parseArgs(['-nfoo'], specs).flags).toEqual({ name: 'foo' });
    expect(parseArgs(['-fo=a=b'], specs).flags).toEqual({ force: true, opt: ['a=b'] });
    expect(() => parseArgs(['--name', 'a', '--name=b'], specs)).toThrow(UsageError);
  });

  it('parseKeyValues: k=v, bare k is "", value keeps further =', () => {
    expect(parseKeyValues(['encrypted', 'a=1', 'b=', 'c=x=y'], '--opt')).toEqual({
      encrypted: '',
      a: '1',
      b: '',
      c: 'x=y',
    });
    expect(parseKeyValues(undefined, '--opt')).toEqual({});
  });

  it('renderTable pads to the widest cell, three spaces apart, no trailing blanks', () => {
    expect(
      renderTable(
        ['A', 'LONGER'],
        [
          ['wide-cell', 'x'],
          ['y', ''],
        ],
      ),
    ).toBe('A           LONGER\nwide-cell   x\ny\n');
  });
});
