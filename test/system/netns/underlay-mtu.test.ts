// The MTU follows the underlay (docs/wire.md "MTU"): on a 9000-byte underlay, gateways started without
// --mtu read their eth0's MTU, say so in GET /status, and give containers 8950 on a plain network and
// 8905 on an encrypted one; a full-size packet with DF crosses between hosts, one byte more does not
// leave the container. A gateway given --mtu keeps it.
import { beforeAll, describe, expect, it } from 'vitest';
import { cleanUpClusterBed } from './cluster-hooks.js';
import { createClusterBed, type ClusterBed } from './cluster-bed.js';

const JUMBO = 9000;
let cb: ClusterBed;

beforeAll(async () => {
  cb = await createClusterBed({ hosts: 2, underlayMtu: JUMBO });
}, 120_000);
cleanUpClusterBed(() => cb);

const status = async (host: number) =>
  (await cb.api(host, 'GET', '/status')).body as { underlay?: { address: string; mtu: number; mtuFrom: string } };

describe('a 9000-byte underlay', () => {
  it('gateways without --mtu take it from the interface of the advertised address', async () => {
    for (const host of [1, 2])
      expect((await status(host)).underlay).toEqual({ address: `198.18.0.${host}`, mtu: JUMBO, mtuFrom: 'eth0' });
  });

  for (const [kind, options, subnet, mtu] of [
    ['plain', {}, '10.71.0.0/24', JUMBO - 50],
    ['encrypted', { encrypted: '' }, '10.72.0.0/24', JUMBO - 95],
  ] as const) {
    it(`a ${kind} network's containers get ${mtu}, and a full-size packet crosses with DF set`, async () => {
      const r = await cb.api(1, 'POST', '/networks', {
        Name: `jumbo-${kind}`,
        Attachable: true,
        Options: options,
        IPAM: { Config: [{ Subnet: subnet }] },
      });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      const c: Array<{ ns: string; ip: string }> = [];
      for (const host of [1, 2]) {
        const ctr = await cb.container(`j${kind[0]}${host}`);
        const connect = await cb.api(host, 'POST', `/networks/jumbo-${kind}/connect`, {
          Container: `j${host}`,
          Sandbox: { Netns: ctr.netns },
        });
        expect(connect.status, JSON.stringify(connect.body)).toBe(200);
        c.push({ ns: ctr.ns, ip: connect.body.IPv4Address.split('/')[0] });
      }
      const [a, b] = c as [{ ns: string; ip: string }, { ns: string; ip: string }];
      expect((await cb.bed.exec(a.ns, ['ip', 'link', 'show', 'eth0'])).stdout).toContain(`mtu ${mtu} `);
      const ping = async (size: number) =>
        (
          await cb.bed.exec(a.ns, ['ping', '-n', '-q', '-c', '1', '-W', '2', '-M', 'do', '-s', String(size), b.ip], {
            allowFail: true,
          })
        ).code === 0;
      // Keys reach the hosts a moment after the network: wait for a small packet first.
      for (let i = 0; i < 20 && !(await ping(56)); i++) await new Promise((r) => setTimeout(r, 250));
      // ICMP payload + 8 (ICMP) + 20 (IPv4) = the container's MTU.
      expect(await ping(mtu - 28), `${mtu - 28} bytes of payload with DF`).toBe(true);
      expect(await ping(mtu - 27), 'one byte more').toBe(false);
    }, 60_000);
  }

  it('--mtu still wins over the interface', async () => {
    await cb.stopGateway(2);
    await cb.startGateway(2, ['--mtu', '1500']);
    expect((await status(2)).underlay).toEqual({ address: '198.18.0.2', mtu: 1500, mtuFrom: '--mtu' });
    await cb.stopGateway(2);
    await cb.startGateway(2);
  }, 60_000);
});
