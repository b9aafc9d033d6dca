import { describe, expect, it } from 'vitest';
import { ApiError, type NetworkDetail } from '../../src/cli/client.js';
import { runCni, type CniApi, type CniIo } from '../../src/cni/plugin.js';

// One invocation with the gateway faked at the API seam (the real one: test/system/cni/conformance.test.ts).

const NET = {
  Name: 'pods',
  IPAM: { Config: [{ Subnet: '10.70.0.0/24', Gateway: '10.70.0.1' }] },
  Containers: {},
} as unknown as NetworkDetail;

const env = (command: string) => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: 'c1',
  CNI_NETNS: '/run/netns/c1',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
});
const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'pods', type: 'veil-cni' });

function fake(connect: () => Promise<{ IPv4Address: string; MacAddress: string }>) {
  const calls: string[] = [];
  const api: CniApi = {
    inspectNetwork: async () => NET,
    connect: async () => {
      calls.push('connect');
      return connect();
    },
    disconnect: async () => {
      calls.push('disconnect');
      throw new ApiError('VEIL_ERR_ENDPOINT_NOT_FOUND', 'not connected', 404);
    },
  };
  const io: CniIo = { client: () => api, netnsExists: () => true, interfaceNamed: async () => undefined };
  return { io, calls };
}

describe('runCni', () => {
  it('ADD: a stale record is disconnected first; the result has the address, MAC, sandbox and resolver', async () => {
    const f = fake(async () => ({ IPv4Address: '10.70.0.2/24', MacAddress: '02:42:0a:46:00:02' }));
    const out = await runCni(env('ADD'), conf, f.io);
    expect(out.exitCode).toBe(0);
    expect(f.calls).toEqual(['disconnect', 'connect']);
    expect(JSON.parse(out.stdout)).toEqual({
      cniVersion: '1.0.0',
      interfaces: [{ name: 'eth0', mac: '02:42:0a:46:00:02', sandbox: '/run/netns/c1' }],
      ips: [{ address: '10.70.0.2/24', gateway: '10.70.0.1', interface: 0 }],
      dns: { nameservers: ['169.254.53.53'], search: ['pods'] },
    });
  });

  it('ADD: etcd down is "try again later" (11); no answer from the gateway disconnects what it may have made', async () => {
    const store = fake(async () => {
      throw new ApiError('VEIL_ERR_STORE_UNAVAILABLE', 'etcd unavailable: no member answers', 503);
    });
    const etcdDown = await runCni(env('ADD'), conf, store.io);
    expect([etcdDown.exitCode, JSON.parse(etcdDown.stdout).code]).toEqual([1, 11]);
    const timeout = fake(async () => {
      throw new ApiError('VEIL_ERR_API_UNREACHABLE', 'cannot reach the veil API: no answer within 20 s');
    });
    const late = await runCni(env('ADD'), conf, timeout.io);
    expect(JSON.parse(late.stdout)).toMatchObject({ code: 11, msg: expect.stringMatching(/no veil gateway answers/) });
    expect(timeout.calls).toEqual(['disconnect', 'connect', 'disconnect']);
  });
});
