// podman (Debian's 4.3, CNI backend) puts containers on a veil network through veil-cni (docs/cni.md):
// a container on each of two hosts on an encrypted network, reaching each other by name; a container
// attached with the veil API on a third host reaches both; only ESP crosses the underlay; `podman rm
// -f` frees the addresses and the records.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { captureUdp } from '../netns/capture.js';
import { createPodmanBed, IMAGE, type PodmanBed } from './podman-bed.js';

const SUBNET = '10.72.0.0/24';
let pb: PodmanBed;

async function ipamKeys(): Promise<string[]> {
  return (await pb.cb.etcdctl(['get', '--prefix', '--keys-only', '/veil/v1/ipam/'])).split('\n').filter(Boolean);
}

beforeAll(async () => {
  pb = await createPodmanBed({ hosts: 3, podmanHosts: [1, 2] });
  const made = await pb.cb.api(1, 'POST', '/networks', {
    Name: 'secure',
    Options: { encrypted: '' },
    IPAM: { Config: [{ Subnet: SUBNET }] },
  });
  expect(made.status).toBe(201);
  for (const i of [1, 2]) await pb.configure(i, 'secure');
}, 240_000);

afterAll(async () => {
  await pb?.destroy();
}, 120_000);

it('podman containers on two hosts reach each other by name, and a veil-CLI container on a third host reaches both', async () => {
  const before = await ipamKeys();
  await pb.podman(1, ['run', '-d', '--name', 'web', '--network', 'secure', IMAGE, 'sleep', '600']);
  await pb.podman(2, ['run', '-d', '--name', 'client', '--network', 'secure', IMAGE, 'sleep', '600']);
  const ip = async (i: number, name: string) =>
    (
      await pb.podman(i, ['inspect', '-f', '{{(index .NetworkSettings.Networks "secure").IPAddress}}', name])
    ).stdout.trim();
  const webIp = await ip(1, 'web');
  const clientIp = await ip(2, 'client');
  expect(webIp).toMatch(/^10\.72\.0\.\d+$/);
  const inspect = (await pb.cb.api(3, 'GET', '/networks/secure')).body;
  const records = Object.values(inspect.Containers) as Array<{ Name: string; Host: string; IPv4Address: string }>;
  expect(records.map((r) => [r.Name, r.Host, r.IPv4Address.split('/')[0]]).sort()).toEqual(
    [
      ['client', 'h2', clientIp],
      ['web', 'h1', webIp],
    ].sort(),
  );

  const byName = await pb.podman(2, ['exec', 'client', 'ping', '-c', '3', '-W', '3', 'web'], { allowFail: true });
  expect(byName.code, byName.stdout + byName.stderr).toBe(0);
  expect(byName.stdout).toContain(webIp);
  const back = await pb.podman(1, ['exec', 'web', 'ping', '-c', '2', '-W', '3', 'client'], { allowFail: true });
  expect(back.code, back.stdout + back.stderr).toBe(0);

  const cli = await pb.cb.container('pmcli');
  const res = await pb.cb.api(3, 'POST', '/networks/secure/connect', {
    Container: 'cli',
    Sandbox: { Netns: cli.netns },
  });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  for (const target of [webIp, clientIp]) {
    const ping = await pb.cb.bed.exec(cli.ns, ['ping', '-c', '2', '-W', '3', target], { allowFail: true });
    expect(ping.code, `${target}: ${ping.stdout}`).toBe(0);
  }

  const seen = await captureUdp(pb.cb.bed, pb.cb.bed.hosts[1]!.netns, pb.cb.dir, 'podman-esp', 'udp', async () => {
    const ping = await pb.podman(2, ['exec', 'client', 'ping', '-c', '5', '-W', '3', webIp], { allowFail: true });
    expect(ping.code, ping.stdout).toBe(0);
  });
  expect(seen.filter((d) => d.dstPort === 4500 || d.srcPort === 4500).length).toBeGreaterThanOrEqual(10);
  expect(seen.filter((d) => d.dstPort === 4789 || d.srcPort === 4789)).toEqual([]);

  await pb.cb.api(3, 'POST', '/networks/secure/disconnect', { Container: 'cli' });
  await pb.podman(1, ['rm', '-f', '-t', '0', 'web']);
  await pb.podman(2, ['rm', '-f', '-t', '0', 'client']);
  expect(await ipamKeys()).toEqual(before);
  expect((await pb.cb.api(1, 'GET', '/networks/secure')).body.Containers ?? {}).toEqual({});
}, 180_000);
