// The data plane end to end: three hosts (namespaces) on a private underlay, one veil gateway each,
// containers on an encrypted and a plain network. Real packets, real kernel VXLAN, real ESP.
// Runs on both data paths, native (the default) and TypeScript (the reference and fallback), and on
// both plain paths: plain networks in the kernel (the default) and through the gateway.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOverlayBed, type Container, type NetworkDef, type OverlayBed } from './overlay-bed.js';

const ENC: NetworkDef = { id: 'enc', index: 1, vni: 4096, encrypted: true, subnet: '10.10.0' };
const PLAIN: NetworkDef = { id: 'plain', index: 2, vni: 4097, encrypted: false, subnet: '10.20.0' };
const HOSTS = 3;

const VARIANTS = [
  { dataPath: 'native', plainPath: 'kernel' },
  { dataPath: 'native', plainPath: 'gateway' },
  { dataPath: 'ts', plainPath: 'gateway' },
] as const;

for (const { dataPath, plainPath } of VARIANTS) {
  describe(`${dataPath} data path, plain networks via ${plainPath}`, () => {
    let ob: OverlayBed;
    const on = new Map<string, Container[]>(); // network id → one container per host

    beforeAll(async () => {
      ob = await createOverlayBed({ hosts: HOSTS, networks: [ENC, PLAIN], dataPath, plainPath });
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
        if (!net.encrypted && plainPath === 'kernel') {
          // Kernel VXLAN to kernel VXLAN: the gateway never saw it, the device did.
          expect(pair).toBeUndefined();
          const plain = await ob.plain(1, net.vni);
          expect(plain.txPackets).toBeGreaterThan(0);
          expect(plain.rxPackets).toBeGreaterThan(0);
          expect(plain.notAPeer.packets).toBe(0);
          return;
        }
        expect(pair?.txPackets).toBeGreaterThan(0);
        expect(pair?.rxPackets).toBeGreaterThan(0);
        if (net.encrypted) expect(pair?.outbound?.sealed).toBeGreaterThan(0);
      });
    }
  });
}
