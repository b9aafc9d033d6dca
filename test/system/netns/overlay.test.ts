// The data plane end to end: three hosts (namespaces) on a private underlay, one veil gateway each,
// containers on an encrypted and a plain network. Real packets, real kernel VXLAN, real ESP.
// Runs on both data paths: native (the default) and TypeScript (the reference and fallback).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOverlayBed, type Container, type NetworkDef, type OverlayBed } from './overlay-bed.js';

const ENC: NetworkDef = { id: 'enc', index: 1, vni: 4096, encrypted: true, subnet: '10.10.0' };
const PLAIN: NetworkDef = { id: 'plain', index: 2, vni: 4097, encrypted: false, subnet: '10.20.0' };
const HOSTS = 3;

for (const dataPath of ['native', 'ts'] as const) {
  describe(`${dataPath} data path`, () => {
    let ob: OverlayBed;
    const on = new Map<string, Container[]>(); // network id → one container per host

    beforeAll(async () => {
      ob = await createOverlayBed({ hosts: HOSTS, networks: [ENC, PLAIN], dataPath });
      for (const [id, list] of await ob.containersOnEveryHost([ENC, PLAIN])) on.set(id, list);
    }, 120_000);

    afterAll(async () => {
      await ob?.destroy();
    });

    const ping = async (from: Container, to: Container, count = 3): Promise<boolean> =>
      (
        await ob.bed.exec(from.ns, ['ping', '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '2', to.ip], {
          allowFail: true,
        })
      ).code === 0;

    for (const net of [ENC, PLAIN]) {
      it(`${net.encrypted ? 'encrypted' : 'plain'} network: containers ping each other across every pair of hosts`, async () => {
        const cs = on.get(net.id)!;
        for (const a of cs) for (const b of cs) if (a !== b) expect(await ping(a, b), `${a.ip} → ${b.ip}`).toBe(true);
        const pair = await ob.pair(1, 2, net.vni);
        expect(pair?.txPackets).toBeGreaterThan(0);
        expect(pair?.rxPackets).toBeGreaterThan(0);
        if (net.encrypted) expect(pair?.outbound?.sealed).toBeGreaterThan(0);
      });
    }
  });
}
