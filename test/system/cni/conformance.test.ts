// The built veil-cni driven exactly as a runtime drives it (CNI SPEC.md: CNI_* variables, the
// configuration on stdin, the answer on stdout), against real gateways on real etcd (docs/cni.md):
// ADD, CHECK, DEL, DEL again, a second ADD on the same interface, every error case, in both spec
// versions a runtime here writes (1.0.0, and 0.4.0 from podman 4), each answer checked against the spec.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../support/wait.js';
import { createClusterBed, type ClusterBed } from '../netns/cluster-bed.js';
import { CLI } from '../netns/overlay-bed.js';
import { runPlugin, type CniAnswer, type CniCall } from './cni-run.js';
import { errorProblems, resultProblems } from './spec-check.js';

const execFileAsync = promisify(execFile);
const SUBNET = '10.70.0.0/24';
let cb: ClusterBed;
let api: string;

const conf = (version: string, extra: Record<string, unknown> = {}) => ({
  cniVersion: version,
  name: 'pods',
  type: 'veil-cni',
  api,
  ...extra,
});
const newId = () => randomBytes(32).toString('hex');

/** An error as the spec has it: non-zero exit, the JSON on stdout, this code. */
function expectError(a: CniAnswer, code: number, version: string, msg: RegExp): void {
  expect(a.code, a.stdout + a.stderr).not.toBe(0);
  expect(errorProblems(a.json, version)).toEqual([]);
  expect(a.json.code, a.json.msg).toBe(code);
  expect(a.json.msg).toMatch(msg);
}

async function endpoints(): Promise<Array<{ Name: string; IPv4Address: string; Runtime?: { ContainerID: string } }>> {
  return Object.values((await cb.api(1, 'GET', '/networks/pods')).body.Containers ?? {});
}

async function links(ns: string): Promise<string[]> {
  const out = (await cb.bed.exec(ns, ['ip', '-o', 'link', 'show'])).stdout;
  return out
    .split('\n')
    .map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '')
    .filter(Boolean);
}

beforeAll(async () => {
  // A short sweep, so that a container that vanished without DEL is cleaned up within the test.
  cb = await createClusterBed({ hosts: 2, gatewayArgs: ['--cni-sweep', '1s'] });
  api = `unix:${cb.socket(1)}`;
  const made = await cb.api(1, 'POST', '/networks', {
    Name: 'pods',
    Options: { encrypted: '' },
    IPAM: { Config: [{ Subnet: SUBNET }] },
  });
  expect(made.status).toBe(201);
}, 120_000);

afterAll(async () => {
  await cb?.destroy();
}, 60_000);

describe('veil-cni', () => {
  it('VERSION answers the versions it speaks, in the version asked', async () => {
    const a = await runPlugin({ command: 'VERSION', conf: { cniVersion: '0.4.0' } });
    expect(a.code).toBe(0);
    expect(a.json).toEqual({ cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] });
  });

  for (const version of ['1.0.0', '0.4.0'] as const) {
    it(`${version}: ADD, CHECK, a second ADD, DEL, DEL again; the container reaches one on another host`, async () => {
      const c = await cb.container(`cni${version.replace(/\./g, '')}`);
      const containerId = newId();
      const call = (command: string, extra: Partial<CniCall> = {}) =>
        runPlugin({ command, containerId, netns: c.netns, ifName: 'eth0', conf: conf(version), ...extra });
      const added = await call('ADD', { args: 'IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=prod' });
      expect(added.code, added.stdout + added.stderr).toBe(0);
      expect(resultProblems(added.json, version)).toEqual([]);
      const r = added.json;
      expect(r.interfaces).toEqual([{ name: 'eth0', mac: expect.stringMatching(/^02:42:/), sandbox: c.netns }]);
      expect(r.ips[0]).toMatchObject({ address: expect.stringMatching(/^10\.70\.0\.\d+\/24$/), gateway: '10.70.0.1' });
      expect(r.dns).toEqual({ nameservers: ['169.254.53.53'], search: ['pods'] });
      const inside = (await cb.bed.exec(c.ns, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0'])).stdout;
      expect(inside).toContain(r.ips[0].address);
      const record = (await endpoints()).find((e) => e.Runtime?.ContainerID === containerId);
      expect(record).toMatchObject({ Name: 'web', IPv4Address: r.ips[0].address, Aliases: ['web.prod'] });

      // Real packets: to a container attached with the veil API on host 2, over ESP.
      const peer = await cb.container(`cnipeer${version.replace(/\./g, '')}`);
      const attached = await cb.api(2, 'POST', '/networks/pods/connect', {
        Container: `peer${version.replace(/\./g, '')}`,
        Sandbox: { Netns: peer.netns },
      });
      expect(attached.status).toBe(200);
      const peerIp = String(attached.body.IPv4Address).split('/')[0]!;
      const ping = await cb.bed.exec(c.ns, ['ping', '-c', '3', '-W', '2', peerIp], { allowFail: true });
      expect(ping.code, ping.stdout).toBe(0);

      const checked = await call('CHECK', { conf: conf(version, { prevResult: r }) });
      expect([checked.code, checked.stdout], checked.stderr).toEqual([0, '']);

      // ADD must fail when the interface exists (CNI SPEC "ADD"), and change nothing.
      const again = await call('ADD');
      expectError(again, 102, version, /already has an interface eth0/);
      expect((await endpoints()).filter((e) => e.Runtime?.ContainerID === containerId)).toHaveLength(1);

      const deleted = await call('DEL');
      expect([deleted.code, deleted.stdout], deleted.stderr).toEqual([0, '']);
      expect((await endpoints()).some((e) => e.Runtime?.ContainerID === containerId)).toBe(false);
      expect(await links(c.ns)).not.toContain('eth0');
      const ipam = await cb.etcdctl(['get', '--prefix', '--keys-only', '/veil/v1/ipam/']);
      expect(ipam).not.toContain(`/${r.ips[0].address.split('/')[0]}\n`);
      // DEL again, and DEL of a namespace that is gone: success (CNI SPEC "DEL").
      expect((await call('DEL')).code).toBe(0);
      expect((await call('DEL', { netns: '' })).code).toBe(0);
      await cb.api(2, 'POST', '/networks/pods/disconnect', { Container: `peer${version.replace(/\./g, '')}` });
    }, 60_000);
  }

  it('a record left by a runtime that died (the interface gone, no DEL) does not block the next ADD of that container', async () => {
    const c = await cb.container('cnistale');
    const containerId = newId();
    const call = (command: string, extra: Partial<CniCall> = {}) =>
      runPlugin({
        command,
        containerId,
        netns: c.netns,
        ifName: 'eth0',
        args: 'IP=10.70.0.88',
        conf: conf('1.0.0'),
        ...extra,
      });
    expect((await call('ADD')).code).toBe(0);
    await cb.bed.exec(c.ns, ['ip', 'link', 'del', 'eth0']); // the node rebooted: namespaces and links are new
    const again = await call('ADD');
    expect(again.code, again.stdout).toBe(0);
    expect(again.json.ips[0].address).toBe('10.70.0.88/24'); // the same address, freed from the stale record
    expect((await endpoints()).filter((e) => e.Runtime?.ContainerID === containerId)).toHaveLength(1);
    expect((await call('DEL')).code).toBe(0);
  });

  it('DEL succeeds where nothing can be removed, and where the gateway is down (it sweeps later), saying so on stderr', async () => {
    const base = { command: 'DEL', containerId: newId(), netns: '', ifName: 'eth0' };
    const down = await runPlugin({ ...base, conf: conf('1.0.0', { api: 'unix:/nonexistent/veil.sock' }) });
    expect([down.code, down.stdout]).toEqual([0, '']);
    expect(down.stderr).toMatch(/cannot reach the veil API.*removes the endpoint once the namespace is gone/);
    const badIf = await runPlugin({ ...base, ifName: 'Eth-0', conf: conf('0.4.0') });
    expect([badIf.code, badIf.stdout]).toEqual([0, '']);
    expect(badIf.stderr).toMatch(/nothing to remove: CNI_IFNAME/);
  });

  it('takes the address, MAC and aliases the runtime asks for (CNI_ARGS, runtimeConfig)', async () => {
    const c = await cb.container('cniask');
    const containerId = newId();
    const added = await runPlugin({
      command: 'ADD',
      containerId,
      netns: c.netns,
      ifName: 'net1',
      args: 'IP=10.70.0.77;MAC=02:00:00:00:00:77',
      conf: conf('1.0.0', { runtimeConfig: { aliases: { pods: ['api', 'api-v2'] } } }),
    });
    expect(added.code, added.stdout).toBe(0);
    expect(added.json.ips[0].address).toBe('10.70.0.77/24');
    expect(added.json.interfaces[0]).toMatchObject({ name: 'net1', mac: '02:00:00:00:00:77' });
    const record = (await endpoints()).find((e) => e.Runtime?.ContainerID === containerId);
    expect(record).toMatchObject({ Name: containerId.slice(0, 12), Aliases: ['api', 'api-v2'] });

    // runtimeConfig.ips (podman's --ip) wins over CNI_ARGS; the address taken is refused and nothing is left.
    const other = await cb.container('cnitaken');
    const taken = await runPlugin({
      command: 'ADD',
      containerId: newId(),
      netns: other.netns,
      ifName: 'eth0',
      conf: conf('0.4.0', { runtimeConfig: { ips: ['10.70.0.77/24'] } }),
    });
    expectError(taken, 101, '0.4.0', /requested address is taken/);
    expect(await links(other.ns)).not.toContain('eth0');
    expect(
      (await runPlugin({ command: 'DEL', containerId, netns: c.netns, ifName: 'net1', conf: conf('1.0.0') })).code,
    ).toBe(0);
  });

  it('CHECK finds what drifted: the address inside the container, the record, the namespace', async () => {
    const c = await cb.container('cnidrift');
    const containerId = newId();
    const call = (command: string, extra: Partial<CniCall> = {}) =>
      runPlugin({ command, containerId, netns: c.netns, ifName: 'eth0', conf: conf('1.0.0'), ...extra });
    const r = (await call('ADD')).json;
    const withPrev = conf('1.0.0', { prevResult: r });
    await cb.bed.exec(c.ns, ['ip', 'addr', 'del', r.ips[0].address, 'dev', 'eth0']);
    expectError(await call('CHECK', { conf: withPrev }), 104, '1.0.0', /eth0 does not have 10\.70\.0\.\d+\/24/);
    await cb.bed.exec(c.ns, ['ip', 'addr', 'add', r.ips[0].address, 'dev', 'eth0']);
    expect((await call('CHECK', { conf: withPrev })).code).toBe(0);
    const moved = { ...r, ips: [{ ...r.ips[0], address: '10.70.0.250/24' }] };
    expectError(
      await call('CHECK', { conf: conf('1.0.0', { prevResult: moved }) }),
      104,
      '1.0.0',
      /record has 10\.70\.0\.\d+\/24 for eth0, prevResult 10\.70\.0\.250\/24/,
    );
    expectError(await call('CHECK', { conf: conf('1.0.0') }), 7, '1.0.0', /CHECK needs the prevResult/);
    expectError(
      await call('CHECK', { conf: conf('0.3.1', { prevResult: r }) }),
      1,
      '0.3.1',
      /CHECK needs cniVersion 0\.4\.0/,
    );
    expect((await call('DEL')).code).toBe(0);
    expectError(await call('CHECK', { conf: withPrev }), 104, '1.0.0', /no endpoint for container/);
  });

  it('a container that vanished without DEL: its gateway removes the endpoint and frees the address', async () => {
    const c = await cb.container('cnigone');
    const containerId = newId();
    const added = await runPlugin({ command: 'ADD', containerId, netns: c.netns, ifName: 'eth0', conf: conf('1.0.0') });
    expect(added.code, added.stdout).toBe(0);
    const ip = String(added.json.ips[0].address).split('/')[0];
    await cb.bed.exec(cb.bed.hosts[0]!.netns, ['ip', 'netns', 'del', c.ns]); // the runtime died, the node cleaned up
    await waitFor(
      async () => !(await endpoints()).some((e) => e.Runtime?.ContainerID === containerId),
      15_000,
      'the vanished container swept',
    );
    expect(await cb.etcdctl(['get', '--prefix', '--keys-only', '/veil/v1/ipam/'])).not.toContain(`/${ip}\n`);
    expect(cb.gateways.get(1)!.stdout()).toMatch(/runtime endpoint removed/);
    // The runtime's DEL when it comes back: still success.
    expect(
      (await runPlugin({ command: 'DEL', containerId, netns: '', ifName: 'eth0', conf: conf('1.0.0') })).code,
    ).toBe(0);
  }, 60_000);

  it('veil cni config prints the list a runtime reads, with the API the CLI was pointed at', async () => {
    const out = await execFileAsync(process.execPath, [CLI, '--api', api, 'cni', 'config', 'pods'], {
      encoding: 'utf8',
    });
    expect(JSON.parse(out.stdout)).toEqual({
      cniVersion: '1.0.0',
      name: 'pods',
      plugins: [{ type: 'veil-cni', network: 'pods', api, capabilities: { ips: true, mac: true, aliases: true } }],
    });
    const missing = await execFileAsync(process.execPath, [CLI, '--api', api, 'cni', 'config', 'nope'], {
      encoding: 'utf8',
    }).catch((err: { code: number; stderr: string }) => err);
    expect(missing).toMatchObject({ code: 1, stderr: expect.stringMatching(/nope/) });
  });

  it('every error is a CNI error with the right code, a message that says what to do, and nothing left behind', async () => {
    const c = await cb.container('cnierr');
    const before = (await endpoints()).length;
    const base = { command: 'ADD', containerId: newId(), netns: c.netns, ifName: 'eth0' };
    const cases: Array<[Partial<CniCall>, string, number, RegExp]> = [
      [{ conf: conf('1.0.0', { api: 'unix:/nonexistent/veil.sock' }) }, '1.0.0', 11, /no veil gateway answers/],
      [{ conf: conf('1.0.0', { network: 'nope' }) }, '1.0.0', 7, /veil has no network nope: create it/],
      [{ conf: '{"cniVersion": "1.0.0", "name": ' }, '1.0.0', 6, /not JSON/],
      [{ conf: { cniVersion: '1.0.0', type: 'veil-cni' } }, '1.0.0', 7, /"name" is required/],
      [{ conf: conf('1.0.0', { api: 'ftp://x' }) }, '1.0.0', 7, /"api" ftp:\/\/x: expected unix/],
      [{ conf: { ...conf('9.9.9') } }, '1.0.0', 1, /cniVersion "9\.9\.9": veil-cni speaks/],
      [{ ifName: 'Eth-0', conf: conf('1.0.0') }, '1.0.0', 4, /CNI_IFNAME "Eth-0"/],
      [{ netns: undefined, conf: conf('1.0.0') }, '1.0.0', 4, /CNI_NETNS must be/],
      [{ containerId: undefined, conf: conf('1.0.0') }, '1.0.0', 4, /CNI_CONTAINERID/],
      [{ args: 'FOO=1', conf: conf('1.0.0') }, '1.0.0', 2, /CNI_ARGS FOO: unknown to veil \(add IgnoreUnknown=1\)/],
      [{ args: 'IP=10.70.0', conf: conf('1.0.0') }, '1.0.0', 7, /requested IP "10\.70\.0"/],
      [{ args: 'IP=10.71.0.5', conf: conf('1.0.0') }, '1.0.0', 7, /10\.71\.0\.5 is not in 10\.70\.0\.0\/24/],
      [{ netns: '/run/netns/veil-cni-missing', conf: conf('1.0.0') }, '1.0.0', 3, /no network namespace at/],
      [
        { command: 'GC', conf: conf('1.0.0') },
        '1.0.0',
        4,
        /CNI_COMMAND "GC": veil-cni does ADD, DEL, CHECK and VERSION/,
      ],
      [{ ifName: 'Eth-0', conf: conf('0.4.0') }, '0.4.0', 4, /CNI_IFNAME/], // told in the version asked
      [
        { conf: conf('1.0.0', { runtimeConfig: { ips: '10.70.0.9' } }) },
        '1.0.0',
        7,
        /"runtimeConfig.ips" must be a list/,
      ],
      [
        { conf: conf('1.0.0', { runtimeConfig: { aliases: { pods: 'web' } } }) },
        '1.0.0',
        7,
        /"runtimeConfig.aliases" must be/,
      ],
    ];
    for (const [call, version, code, msg] of cases) {
      const answer = await runPlugin({ ...base, ...call } as CniCall);
      expectError(answer, code, version, msg);
    }
    expect((await endpoints()).length).toBe(before);
    expect(await links(c.ns)).not.toContain('eth0');
  }, 60_000);
});
