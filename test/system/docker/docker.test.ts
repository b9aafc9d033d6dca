// The Docker plugin with real dockerd (Debian's docker.io 20.10) on three hosts, each beside its own
// veil gateway, on one etcd (docs/docker.md): `docker network create -d veil` on each host maps onto one
// veil network, `docker run --network` containers reach each other and a veil-CLI container across
// hosts, only ESP crosses the underlay, refusals say why, and `docker rm` leaves nothing behind.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../support/wait.js';
import { captureUdp } from '../netns/capture.js';
import { registerFakeHost } from '../netns/cluster-bed.js';
import { createDockerBed, IMAGE, type DockerBed } from './docker-bed.js';

const SUBNET = '10.60.0.0/24';
/** docs/docker.md "Compose", with the test's image. */
const COMPOSE = `version: "2.4"
services:
  api:
    image: ${IMAGE}
    command: sleep 600
    networks: [secure]
  client:
    image: ${IMAGE}
    command: sleep 600
    networks: [secure]
networks:
  secure:
    driver: veil
    driver_opts:
      encrypted: ""
    ipam:
      driver: veil
      config:
        - subnet: 10.65.0.0/24
`;

function run(file: string, args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(file, args, { env: { ...process.env, ...env }, timeout: 120_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${file} ${args.join(' ')}: ${stderr}${stdout}`)) : resolve(stdout),
    ),
  );
}
let db: DockerBed;

const create = (i: number, extra: string[] = [], name = 'secure', subnet = SUBNET) =>
  db.createNetwork(i, name, subnet, extra);

/** The container's address on the network, as Docker reports it. */
async function addressOf(i: number, container: string, network = 'secure'): Promise<string> {
  const out = await db.docker(i, [
    'inspect',
    '-f',
    `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`,
    container,
  ]);
  return out.stdout.trim();
}

async function veilLinks(i: number): Promise<string[]> {
  const host = db.cb.bed.hosts[i - 1]!;
  const names = async (ns: string) =>
    (await db.cb.bed.exec(ns, ['ip', '-o', 'link', 'show'])).stdout
      .split('\n')
      .map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '')
      .filter((n) => /^v[eh][0-9a-f]{12}$/.test(n));
  return [...(await names(host.netns)), ...(await names(host.vtepNetns))];
}

beforeAll(async () => {
  db = await createDockerBed({ hosts: 3 });
}, 240_000);

afterAll(async () => {
  await db?.destroy();
}, 120_000);

describe('docker network create -d veil', () => {
  it('on two hosts gives one encrypted veil network that every gateway lists', async () => {
    const first = await create(1, ['--label', 'team=blue', '--attachable']);
    expect(first.code, first.stderr).toBe(0);
    const second = await create(2, ['--label', 'team=blue', '--attachable']);
    expect(second.code, second.stderr).toBe(0);
    await waitFor(async () => (await db.cb.api(3, 'GET', '/networks/secure')).status === 200, 10_000, 'secure in veil');
    const net = (await db.cb.api(3, 'GET', '/networks/secure')).body;
    expect(net).toMatchObject({
      Name: 'secure',
      Attachable: true,
      Labels: { team: 'blue' },
      IPAM: { Config: [{ Subnet: SUBNET, Gateway: '10.60.0.1' }] },
    });
    expect(
      (await db.cb.api(3, 'GET', '/networks')).body.filter((n: { Name: string }) => n.Name === 'secure'),
    ).toHaveLength(1);
  });

  it('refuses an unknown option, a missing --ipam-driver veil, and a disagreement on the subnet, each with why', async () => {
    const unknown = await create(3, ['-o', 'colour=red'], 'odd', '10.61.0.0/24');
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/unknown option -o colour/);
    const noIpam = await db.docker(3, ['network', 'create', '-d', 'veil', '--subnet', '10.62.0.0/24', 'odd'], {
      allowFail: true,
    });
    expect(noIpam.code).not.toBe(0);
    expect(noIpam.stderr).toMatch(/--ipam-driver veil/);
    // Plain on the subnet of the encrypted one: refused at create, nothing written.
    const plain = await db.docker(
      3,
      ['network', 'create', '-d', 'veil', '--ipam-driver', 'veil', '--subnet', SUBNET, 'secure'],
      { allowFail: true },
    );
    expect(plain.code).not.toBe(0);
    expect(plain.stderr).toMatch(/plain \(no -o encrypted\), veil has it encrypted/);
    expect((await db.cb.api(1, 'GET', '/networks/odd')).status).toBe(404);
  });

  it('with a Windows host registered, a strict encrypted network is refused, as through the API', async () => {
    const windows = await registerFakeHost(db.cb, {
      id: 'win1',
      index: 40,
      address: '198.18.0.40',
      publicKeyHex: '11'.repeat(32),
      os: 'windows',
    });
    try {
      const strict = await create(2, ['-o', 'strict'], 'hard', '10.66.0.0/24');
      expect(strict.code).not.toBe(0);
      expect(strict.stderr).toMatch(/strict network: a member host cannot encrypt.*Windows host\(s\) win1/);
      expect((await db.cb.api(1, 'GET', '/networks/hard')).status).toBe(404);
    } finally {
      await windows.revoke();
    }
  });
});

describe("docker-compose (Debian's docker-compose 1.29) on two hosts", () => {
  it('services on two hosts reach each other by service name over a veil network', async () => {
    const file = join(db.cb.dir, 'compose.yml');
    writeFileSync(file, COMPOSE);
    const compose = (i: number, args: string[]) =>
      run('docker-compose', ['-p', 'demo', '-f', file, ...args], { DOCKER_HOST: `unix://${db.dockerSocket(i)}` });
    try {
      await compose(1, ['up', '-d', 'api']);
      await compose(2, ['up', '-d', 'client']);
      const ping = await db.docker(2, ['exec', 'demo_client_1', 'ping', '-c', '2', '-W', '3', 'api'], {
        allowFail: true,
      });
      expect(ping.code, ping.stdout + ping.stderr).toBe(0);
      const back = await db.docker(1, ['exec', 'demo_api_1', 'ping', '-c', '2', '-W', '3', 'client'], {
        allowFail: true,
      });
      expect(back.code, back.stdout + back.stderr).toBe(0);
      expect((await db.cb.api(3, 'GET', '/networks/demo_secure')).body).toMatchObject({
        Encrypted: true,
        IPAM: { Config: [{ Subnet: '10.65.0.0/24' }] },
      });
    } finally {
      await compose(1, ['down']).catch(() => undefined);
      await compose(2, ['down']).catch(() => undefined);
    }
  });
});

describe('docker run --network secure', () => {
  let webIp: string;

  it('containers on two hosts reach each other; addresses come from veil and the endpoints are in etcd', async () => {
    await db.docker(1, [
      'run',
      '-d',
      '--name',
      'web',
      '--network',
      'secure',
      '--network-alias',
      'www',
      IMAGE,
      'sleep',
      '600',
    ]);
    webIp = await addressOf(1, 'web');
    expect(webIp).toMatch(/^10\.60\.0\.\d+$/);
    const ping = await db.docker(
      2,
      ['run', '--rm', '--network', 'secure', IMAGE, 'ping', '-c', '3', '-W', '3', webIp],
      {
        allowFail: true,
      },
    );
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);
    // Named once Docker showed the container: `veil network inspect` on another host lists it by its Docker name.
    await waitFor(
      async () => {
        const net = (await db.cb.api(3, 'GET', '/networks/secure')).body;
        return Object.values(net.Containers ?? {}).some((c) => (c as { Name: string }).Name === 'web');
      },
      15_000,
      'web named in veil',
    );
    const net = (await db.cb.api(3, 'GET', '/networks/secure')).body;
    expect(Object.values(net.Containers)).toEqual([
      expect.objectContaining({
        Name: 'web',
        IPv4Address: `${webIp}/24`,
        Host: 'h1',
        Aliases: expect.arrayContaining(['www']),
      }),
    ]);
  });

  it('names cross hosts: a Docker container on host 2 reaches web and its alias by name', async () => {
    for (const name of ['web', 'www']) {
      const ping = await db.docker(
        2,
        ['run', '--rm', '--network', 'secure', IMAGE, 'ping', '-c', '1', '-W', '3', name],
        {
          allowFail: true,
        },
      );
      expect(ping.code, `${name}: ${ping.stdout}${ping.stderr}`).toBe(0);
      expect(ping.stdout).toContain(webIp);
    }
  });

  it('a container attached with the veil API on host 3 and the Docker container on host 1 reach each other', async () => {
    const c = await db.cb.container('cli');
    const res = await db.cb.api(3, 'POST', '/networks/secure/connect', {
      Container: 'cli',
      Sandbox: { Netns: c.netns },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const cliIp = String(res.body.IPv4Address).split('/')[0]!;
    // By name both ways: veil's resolver answers the CLI container, Docker's forwards to it for web.
    const there = await db.cb.bed.exec(c.ns, ['ping', '-c', '3', '-W', '3', 'web']);
    expect(there.stdout).toContain(webIp);
    const back = await db.docker(1, ['exec', 'web', 'ping', '-c', '3', '-W', '3', 'cli'], { allowFail: true });
    expect(back.code, back.stdout + back.stderr).toBe(0);
    expect(back.stdout).toContain(cliIp);
    await db.cb.api(3, 'POST', '/networks/secure/disconnect', { Container: 'cli' });
  });

  it('crosses the underlay as ESP in UDP 4500 only, and veil shows every peer protected', async () => {
    const host2 = db.cb.bed.hosts[1]!;
    const seen = await captureUdp(db.cb.bed, host2.netns, db.cb.dir, 'docker-esp', 'udp', async () => {
      const ping = await db.docker(
        2,
        ['run', '--rm', '--network', 'secure', IMAGE, 'ping', '-c', '5', '-W', '3', webIp],
        {
          allowFail: true,
        },
      );
      expect(ping.code, ping.stdout + ping.stderr).toBe(0);
    });
    const overlay = seen.filter((d) => d.dstPort === 4500 || d.srcPort === 4500);
    expect(overlay.length).toBeGreaterThanOrEqual(10);
    expect(seen.filter((d) => d.dstPort === 4789 || d.srcPort === 4789)).toEqual([]);
    // "Is my traffic encrypted?" as veil answers it on host 2: every peer protected.
    const st = (await db.cb.api(2, 'GET', '/networks/secure/status')).body;
    expect(st).toMatchObject({ Network: 'secure', Encrypted: true, Protected: true });
    expect(st.Peers.map((p: { Host: string; Protected: boolean }) => [p.Host, p.Protected])).toEqual([
      ['h1', true],
      ['h3', true],
    ]);
  });

  it('a veil gateway restart (SIGTERM unplumbs the host) ends with the Docker container reachable again', async () => {
    await db.cb.stopGateway(1);
    await db.cb.startGateway(1, [
      '--docker-plugins',
      db.pluginsDir(1),
      '--docker-host',
      `unix://${db.dockerSocket(1)}`,
    ]);
    const ping = await db.docker(
      2,
      ['run', '--rm', '--network', 'secure', IMAGE, 'ping', '-c', '3', '-W', '3', 'web'],
      {
        allowFail: true,
      },
    );
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);
    // web's port again: its vtep end only (the other is inside web), nothing left over.
    expect(await veilLinks(1)).toHaveLength(1);
  });

  it('docker network connect and disconnect a running container: a second interface on the veil network, then none', async () => {
    expect((await create(1, [], 'side', '10.64.0.0/24')).code).toBe(0);
    await db.docker(1, ['run', '-d', '--name', 'multi', '--network', 'side', IMAGE, 'sleep', '600']);
    await db.docker(1, ['network', 'connect', 'secure', 'multi']);
    const ip = await addressOf(1, 'multi');
    expect(ip).toMatch(/^10\.60\.0\.\d+$/);
    const ping = await db.docker(2, ['run', '--rm', '--network', 'secure', IMAGE, 'ping', '-c', '2', '-W', '3', ip], {
      allowFail: true,
    });
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);
    await db.docker(1, ['network', 'disconnect', 'secure', 'multi']);
    const net = (await db.cb.api(2, 'GET', '/networks/secure')).body;
    expect(Object.values(net.Containers ?? {}).map((c) => (c as { IPv4Address: string }).IPv4Address)).not.toContain(
      `${ip}/24`,
    );
    await db.docker(1, ['rm', '-f', 'multi']);
  });

  it('docker stop and start, and docker restart: web is reachable by name again each time', async () => {
    // -t 1: sleep as PID 1 ignores SIGTERM, so Docker would wait its 10 s before SIGKILL.
    for (const step of [
      ['stop', '-t', '1', 'web'],
      ['start', 'web'],
      ['restart', '-t', '1', 'web'],
    ]) {
      await db.docker(1, step);
      if (step[0] === 'stop') {
        // Stopped: its endpoint and address are gone from veil.
        await waitFor(
          async () => Object.keys((await db.cb.api(2, 'GET', '/networks/secure')).body.Containers ?? {}).length === 0,
          10_000,
          'web gone',
        );
        continue;
      }
      const ip = await addressOf(1, 'web');
      const ping = await db.docker(
        2,
        ['run', '--rm', '--network', 'secure', IMAGE, 'ping', '-c', '2', '-W', '3', 'web'],
        {
          allowFail: true,
        },
      );
      expect(ping.code, `${step[0]}: ${ping.stdout}${ping.stderr}`).toBe(0);
      expect(ping.stdout).toContain(ip);
    }
  });

  it('a dockerd restart: a container with a restart policy comes back reachable by name, nothing left of its old endpoint', async () => {
    await db.docker(1, [
      'run',
      '-d',
      '--restart',
      'always',
      '--name',
      'keeper',
      '--network',
      'secure',
      IMAGE,
      'sleep',
      '600',
    ]);
    await db.restartDockerd(1);
    await waitFor(
      async () =>
        (await db.docker(1, ['inspect', '-f', '{{.State.Running}}', 'keeper'], { allowFail: true })).stdout.trim() ===
        'true',
      30_000,
      'keeper running again',
    );
    const ip = await addressOf(1, 'keeper');
    const ping = await db.docker(
      2,
      ['run', '--rm', '--network', 'secure', IMAGE, 'ping', '-c', '2', '-W', '3', 'keeper'],
      {
        allowFail: true,
      },
    );
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);
    expect(ping.stdout).toContain(ip);
    const net = (await db.cb.api(2, 'GET', '/networks/secure')).body;
    expect(Object.values(net.Containers).filter((c) => (c as { Name: string }).Name === 'keeper')).toHaveLength(1);
    await db.docker(1, ['rm', '-f', 'keeper']);
  });

  it('200 docker run --rm cycles leave the address pool, etcd and the hosts as they were', async () => {
    const state = async () => {
      const kvs = await db.cb.etcdctl(['get', '--prefix', '/veil/v1/ipam/', '--keys-only']);
      const eps = await db.cb.etcdctl(['get', '--prefix', '/veil/v1/endpoints/', '--keys-only']);
      return { ipam: kvs.trim(), endpoints: eps.trim(), links: await veilLinks(2) };
    };
    const before = await state();
    const CYCLES = 200;
    const PARALLEL = 4;
    let failed = 0;
    for (let i = 0; i < CYCLES; i += PARALLEL) {
      const runs = await Promise.all(
        Array.from({ length: Math.min(PARALLEL, CYCLES - i) }, () =>
          db.docker(2, ['run', '--rm', '--network', 'secure', IMAGE, 'true'], { allowFail: true }),
        ),
      );
      failed += runs.filter((r) => r.code !== 0).length;
    }
    expect(failed).toBe(0);
    await waitFor(async () => JSON.stringify(await state()) === JSON.stringify(before), 10_000, 'state as before');
  }, 600_000);

  it('the same name with another subnet on another host: the first container is refused with the fix', async () => {
    const made = await create(3, [], 'secure', '10.63.0.0/24');
    expect(made.code, made.stderr).toBe(0); // Docker does not tell a driver the name (docs/docker.md "Names")
    const run = await db.docker(3, ['run', '--rm', '--network', 'secure', IMAGE, 'true'], { allowFail: true });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(
      /no veil network has subnet 10\.63\.0\.0\/24|subnet 10\.63\.0\.0\/24, veil has 10\.60\.0\.0\/24/,
    );
    expect((await db.docker(3, ['network', 'rm', 'secure'])).code).toBe(0);
    expect((await db.cb.api(3, 'GET', '/networks/secure')).status).toBe(200); // veil's stays
  });

  it('docker rm leaves no endpoint, no reserved address and no port behind', async () => {
    await db.docker(1, ['rm', '-f', 'web']);
    await waitFor(
      async () => {
        const net = (await db.cb.api(1, 'GET', '/networks/secure')).body;
        return Object.keys(net.Containers ?? {}).length === 0;
      },
      10_000,
      'endpoint gone',
    );
    const ipam = await db.cb.etcdctl(['get', '--prefix', '--keys-only', '/veil/v1/ipam/']);
    expect(ipam.trim()).toBe('');
    for (const i of [1, 2, 3]) expect(await veilLinks(i), `host ${i}`).toEqual([]);
  });
});
