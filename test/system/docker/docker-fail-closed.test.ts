// Fail closed through Docker (docs/security.md): host 2's gateway reports Windows, so the key schedule
// gives it no key. Docker containers on an encrypted veil network between host 1 and host 2 do not
// reach each other and nothing of theirs crosses the underlay as plain VXLAN: the drops are counted,
// the status says so and both gateways log the Windows warning. A plain veil network between the same
// two containers is the control that shows the capture would see the marker. Then etcd stops: the
// plugin answers Docker with an error that names the store, within its bound, and all is well once
// etcd is back.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseVxlanHeader } from '../../../src/vxlan/wire/vxlan.js';
import type { UdpDatagram } from '../support/pcap.js';
import { waitFor } from '../../support/wait.js';
import { captureUdp } from '../netns/capture.js';
import { createDockerBed, IMAGE, type DockerBed } from './docker-bed.js';

const execFileAsync = promisify(execFile);
const MARKER = `veil-fail-closed-${randomBytes(6).toString('hex')}`;
/** tftp read requests sent, each carrying the marker as its file name. */
const REQUESTS = 20;
const NETS = { enc: '10.67.0.0/24', plain: '10.68.0.0/24' } as const;
type Net = keyof typeof NETS;
let db: DockerBed;

/** The container's address, MAC and interface on a network, as Docker and its namespace say. */
async function place(i: number, container: string, net: Net) {
  const f = (field: string) => `{{(index .NetworkSettings.Networks "${net}").${field}}}`;
  const [ip, mac, sandbox] = (
    await db.docker(i, [
      'inspect',
      '-f',
      `${f('IPAddress')} ${f('MacAddress')} {{.NetworkSettings.SandboxKey}}`,
      container,
    ])
  ).stdout
    .trim()
    .split(' ') as [string, string, string];
  const addrs = (await execFileAsync('nsenter', [`--net=${sandbox}`, 'ip', '-o', '-4', 'addr', 'show'])).stdout;
  const dev = addrs
    .split('\n')
    .find((l) => l.includes(` ${ip}/`))
    ?.split(/\s+/)[1];
  return { ip, mac, sandbox, dev: dev ?? '' };
}

beforeAll(async () => {
  db = await createDockerBed({ hosts: 2, hostArgs: { 2: ['--os', 'windows'] } });
  for (const i of [1, 2]) {
    expect((await db.createNetwork(i, 'enc', NETS.enc)).code).toBe(0);
    const plain = ['network', 'create', '-d', 'veil', '--ipam-driver', 'veil', '--subnet', NETS.plain, 'plain'];
    await db.docker(i, plain);
  }
  for (const [i, name] of [
    [1, 'alpha'],
    [2, 'bravo'],
  ] as const) {
    await db.docker(i, ['run', '-d', '--name', name, '--network', 'enc', IMAGE, 'sleep', '600']);
    await db.docker(i, ['network', 'connect', 'plain', name]);
  }
  await waitFor(
    async () =>
      (await db.cb.api(1, 'GET', '/networks/enc/keys')).body.Epochs?.some(
        (e: { State: string }) => e.State === 'active',
      ),
    20_000,
    'epoch 1 active',
  );
}, 300_000);

afterAll(async () => {
  await db?.destroy();
}, 120_000);

/** From alpha on host 1 to bravo on host 2 over `net`: REQUESTS marker datagrams, then a ping; what host 2's underlay saw. */
async function traffic(net: Net): Promise<{ wire: UdpDatagram[]; pinged: boolean }> {
  const a = await place(1, 'alpha', net);
  const b = await place(2, 'bravo', net);
  // A static neighbour entry, so the marker leaves the container as a unicast frame without ARP.
  await execFileAsync('nsenter', [`--net=${a.sandbox}`, 'ip', 'neigh', 'replace', b.ip, 'lladdr', b.mac, 'dev', a.dev]);
  let pinged = false;
  const wire = await captureUdp(db.cb.bed, db.cb.bed.hosts[1]!.netns, db.cb.dir, `docker-${net}`, 'udp', async () => {
    const script = `for i in $(seq ${REQUESTS}); do timeout 1 tftp -g -r ${MARKER} -l /tmp/x ${b.ip} & done; wait`;
    await db.docker(1, ['exec', 'alpha', 'sh', '-c', script], { allowFail: true });
    const ping = await db.docker(1, ['exec', 'alpha', 'ping', '-c', '2', '-W', '1', b.ip], { allowFail: true });
    pinged = ping.code === 0;
  });
  return { wire, pinged };
}

/** Host i's gateway log lines with this message. */
function logged(i: number, msg: string): Array<Record<string, unknown>> {
  return db.cb.gateways
    .get(i)!
    .stdout()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === msg);
}

const hasMarker = (d: UdpDatagram) => Buffer.from(d.payload).includes(MARKER);

it('Docker containers on an encrypted network with a host that cannot encrypt: dropped and counted, never plain VXLAN; the plain control carries the marker', async () => {
  const vni = (await db.cb.api(1, 'GET', '/networks/enc')).body.VNI as number;
  const dropsTo2 = async () =>
    (
      (await db.cb.api(1, 'GET', '/status')).body.pairs as Array<{
        peer: string;
        vni: number;
        drops: Record<string, number>;
      }>
    ).find((p) => p.peer === 'h2' && p.vni === vni)?.drops['no-outbound-sa'] ?? 0;
  const before = await dropsTo2();
  const enc = await traffic('enc');
  expect(enc.pinged, 'alpha reached bravo over the encrypted network').toBe(false);
  const encVxlan = enc.wire.filter((d) => {
    const h = parseVxlanHeader(d.payload);
    return d.dstPort === 4789 && h.ok && h.vni === vni;
  });
  expect(encVxlan, 'the encrypted network in plain VXLAN').toEqual([]);
  expect(enc.wire.filter(hasMarker), 'plaintext marker on the wire').toEqual([]);
  const dropped = (await dropsTo2()) - before;
  console.log(`fail closed (Docker): ${dropped} frames from alpha toward the Windows host dropped as no-outbound-sa`);
  expect(dropped).toBeGreaterThanOrEqual(REQUESTS);

  const st = (await db.cb.api(1, 'GET', '/networks/enc/status')).body;
  expect(st.Protected).toBe(false);
  expect(st.Peers[0]).toMatchObject({ Host: 'h2', OS: 'windows', Protected: false, Outbound: null });
  // Each side's gateway said it: the network with a Windows member, and the container on the Windows host.
  expect(logged(1, 'encrypted network with Windows members')).toContainEqual(
    expect.objectContaining({ warning: expect.stringMatching(/Windows host\(s\) h2 on this encrypted network/) }),
  );
  expect(logged(2, 'docker endpoint not protected')).toContainEqual(
    expect.objectContaining({ warning: expect.stringMatching(/Windows host h2.*encrypted network enc/) }),
  );

  const plain = await traffic('plain');
  expect(plain.pinged, 'alpha reached bravo over the plain network').toBe(true);
  expect(plain.wire.filter((d) => d.dstPort === 4789 && hasMarker(d)).length).toBeGreaterThanOrEqual(REQUESTS);
}, 120_000);

it('etcd down: docker run is refused at once with an error that names etcd; once etcd is back it works', async () => {
  await db.cb.etcd.stopMember(0);
  try {
    const started = Date.now();
    const run = await db.docker(1, ['run', '--rm', '--network', 'plain', IMAGE, 'true'], { allowFail: true });
    const took = Date.now() - started;
    console.log(`docker run with etcd down: refused after ${took} ms: ${run.stderr.trim()}`);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/etcd unavailable/);
  } finally {
    await db.cb.etcd.startMember(0);
  }
  await waitFor(
    async () =>
      (await db.docker(1, ['run', '--rm', '--network', 'plain', IMAGE, 'true'], { allowFail: true })).code === 0,
    60_000,
    'docker run once etcd is back',
  );
}, 180_000);
