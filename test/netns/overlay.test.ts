// The data plane end to end: three hosts (namespaces) on a private underlay, one veil gateway each,
// containers on an encrypted and a plain network. Real packets, real kernel VXLAN, real ESP.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOverlayBed, type Container, type NetworkDef, type OverlayBed } from './overlay-bed.js';

const ENC: NetworkDef = { id: 'enc', index: 1, vni: 4096, encrypted: true, subnet: '10.10.0' };
const PLAIN: NetworkDef = { id: 'plain', index: 2, vni: 4097, encrypted: false, subnet: '10.20.0' };
const HOSTS = 3;

let ob: OverlayBed;
const on = new Map<string, Container[]>(); // network id → one container per host

beforeAll(async () => {
  ob = await createOverlayBed({ hosts: HOSTS, networks: [ENC, PLAIN] });
  for (const [id, list] of await ob.containersOnEveryHost([ENC, PLAIN])) on.set(id, list);
}, 120_000);

afterAll(async () => {
  await ob?.destroy();
});

async function ping(from: Container, to: Container, count = 3): Promise<boolean> {
  const r = await ob.bed.exec(from.ns, ['ping', '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '2', to.ip], { allowFail: true });
  return r.code === 0;
}

for (const net of [ENC, PLAIN]) {
  describe(`${net.encrypted ? 'encrypted' : 'plain'} network`, () => {
    it('containers ping each other across every pair of hosts', async () => {
      const cs = on.get(net.id)!;
      for (const a of cs) for (const b of cs) if (a !== b) expect(await ping(a, b), `${a.ip} → ${b.ip}`).toBe(true);
      const pair = await ob.pair(1, 2, net.vni);
      expect(pair?.txPackets).toBeGreaterThan(0);
      expect(pair?.rxPackets).toBeGreaterThan(0);
      if (net.encrypted) expect(pair?.outbound?.sealed).toBeGreaterThan(0);
    });
  });
}
