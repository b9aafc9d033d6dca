// A network created and deleted over and over leaves nothing behind in either data path: its (peer,
// network) pairs, its SAs in service and retired, and its epoch mark go with it (native/satable.c
// "What goes with what"). Counted with each path's own figures, so a leak shows as a number.
import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SecretKey } from '../../../src/crypto/secret.js';
import type { DataPath, SaKeySpec } from '../../../src/vxlan/datapath.js';
import type { NativeDataPath } from '../../../src/vxlan/native/datapath.js';
import type { TsDataPath } from '../../../src/vxlan/ts/datapath.js';
import { bothDataPaths } from '../../support/data-paths.js';
import { loopbackPeerNet } from '../../support/udp.js';

const CYCLES = 200;
const NET = `127.${100 + randomInt(100)}.${randomInt(250)}`;
const A = { underlay: `${NET}.51`, host: `${NET}.52`, vtep: `${NET}.53` };
const PEERS = [
  { id: 'b', index: 2, address: `${NET}.62` },
  { id: 'c', index: 3, address: `${NET}.63` },
] as const;
const SELF = 1;
/** A network that stays, so the churn runs beside live state. */
const STAYS = { vni: 300, index: 3 };
/** The churned network: another VNI and index each time, as networks created anew may get. */
const churned = (cycle: number) => ({ vni: 400 + cycle, index: 4 + cycle });

let ts: TsDataPath;
let native: NativeDataPath;

beforeAll(async () => {
  ({ ts, native } = bothDataPaths({
    addresses: A,
    peerNet: loopbackPeerNet(NET),
    ports: { esp: 29720, plain: 29721, vtep: 29722, peerEsp: 29723, peerPlain: 29724, delivery: 0, gateway: 29820 },
  }));
  for (const dp of [ts, native] as DataPath[]) {
    await dp.start();
    dp.setNetwork({ vni: STAYS.vni, encrypted: true });
    for (const p of PEERS) await dp.addPeer(p);
  }
});

afterAll(async () => {
  await native?.stop();
  await ts?.stop();
});

/** The SAs of one epoch of `net` toward and from every peer: what a rotation installs. */
type Directed = SaKeySpec & { dir: 'in' | 'out' };

function epochSpecs(net: { vni: number; index: number }, epoch: number, generation: number): Directed[] {
  return PEERS.flatMap((p) =>
    (['in', 'out'] as const).map((dir) => ({
      spi: (((epoch % 4) << 30) | ((dir === 'in' ? p.index : SELF) << 16) | net.index) >>> 0,
      // A network created again has new epoch secrets, hence new keys (docs/keys.md "SA keys").
      keymat: new SecretKey(Buffer.from(`${dir}/${p.id}/${net.vni}/${epoch}/${generation}`.padEnd(20, '.'))),
      esn: true,
      vni: net.vni,
      peerId: p.id,
      epoch,
      dir,
    })),
  );
}

function install(dp: DataPath, specs: Directed[]): void {
  for (const { dir, ...spec } of specs) {
    if (dir === 'in') dp.installInbound(spec);
    else dp.activateOutbound(spec);
  }
}

/** What each path holds: pairs in its status, and the native tables' own counts. */
function held() {
  const raw = native.stats();
  const tsStatus = ts.status(); // first: the TypeScript path lists every configured pair when asked
  return {
    nativePairs: raw.pairs.length,
    nativeInbound: raw.inbound.length,
    nativeRetired: raw.retired.inbound + raw.retired.outbound,
    nativeTables: native.status().tables,
    tsPairs: ts.forwarder.stats.size,
    tsTables: tsStatus.tables,
  };
}

it(`${CYCLES} create/delete cycles of a network, each with two epochs rotated: nothing left behind`, async () => {
  for (const dp of [ts, native] as DataPath[]) install(dp, epochSpecs(STAYS, 1, 0));
  const baseline = held();
  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    const net = churned(cycle);
    for (const dp of [ts, native] as DataPath[]) {
      dp.setNetwork({ vni: net.vni, encrypted: true });
      install(dp, epochSpecs(net, 1, cycle));
      // A rotation: epoch 2 in, epoch 1 retired (its SAs remembered as retired until the network goes).
      install(dp, epochSpecs(net, 2, cycle));
      for (const p of PEERS) dp.retireInbound(p.id, net.vni, 1);
    }
    if (cycle === 1) {
      const during = held();
      expect(during.nativePairs).toBe(baseline.nativePairs + PEERS.length);
      expect(during.tsPairs).toBe(baseline.tsPairs + PEERS.length);
      expect(during.nativeRetired).toBeGreaterThan(baseline.nativeRetired);
    }
    for (const dp of [ts, native] as DataPath[]) dp.removeNetwork(net.vni);
  }
  expect(held()).toEqual(baseline);
  // The network that stayed kept its pairs and SAs throughout.
  expect(native.status().pairs.filter((p) => p.vni === STAYS.vni && p.outbound?.epoch === 1)).toHaveLength(2);
  expect(ts.status().pairs.filter((p) => p.vni === STAYS.vni && p.outbound?.epoch === 1)).toHaveLength(2);
});
