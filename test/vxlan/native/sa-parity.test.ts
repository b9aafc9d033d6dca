// Both data paths take the same SA decisions (docs/wire.md "Sequence numbers and replay"): one random
// sequence of table changes — installs, activations, retirements, peers and networks removed and added
// again, peers renumbered (same keys, another host index), keys of restarted peers, keys under the wrong
// name or of the other peer — goes to the TypeScript data path and to the native one, and after every
// step both must have accepted or refused it alike (same code), show the same SAs in service, and seal
// the next frame of a pair with the same sequence number.
import { randomInt } from 'node:crypto';
import type dgram from 'node:dgram';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SecretKey } from '../../../src/crypto/secret.js';
import type { DataPath, DataPathStatus, SaKeySpec } from '../../../src/vxlan/datapath.js';
import type { NativeDataPath } from '../../../src/vxlan/native/datapath.js';
import type { TsDataPath } from '../../../src/vxlan/ts/datapath.js';
import { bothDataPaths } from '../../support/data-paths.js';
import { vxlanDatagram } from '../../support/esp-fixtures.js';
import { FUZZ_SEED } from '../../support/fuzz.js';
import { Prng } from '../../support/prng.js';
import { loopbackPeerNet, TestSockets } from '../../support/udp.js';
import { waitUntil } from '../../support/wait.js';
import { gatewayAddress } from '../../../src/model/peer-net.js';

const STEPS = 1000;
const NET = `127.${100 + randomInt(100)}.${randomInt(250)}`;
const A = { underlay: `${NET}.31`, host: `${NET}.32`, vtep: `${NET}.33` };
const PORTS = { esp: 29700, plain: 29701, vtep: 29702, peerEsp: 29703, peerPlain: 29704 };
const PEERS = [
  { id: 'b', index: 2, address: `${NET}.42` },
  { id: 'c', index: 3, address: `${NET}.43` },
] as const;
/** The host indexes each peer may be renumbered to (apart, so no index ever names two peers). */
const INDEXES: Record<string, readonly number[]> = { b: [2, 4, 6], c: [3, 5, 7] };
/** This gateway's own host index: the SPI of its outbound SAs (derive.ts), the same whatever the peer's. */
const SELF = 1;
const NETWORKS = [
  { vni: 100, index: 1 },
  { vni: 200, index: 2 },
] as const;
/** The peer net on loopback; a peer's gateway address is its index's, at one port. */
const PEER_NET = loopbackPeerNet(NET);
const GATEWAY_PORT = 29800;

const sockets = new TestSockets();
let ts: TsDataPath;
let native: NativeDataPath;
let vtep: dgram.Socket;
const sealedAt = new Map<string, number[]>(); // peer id → sequence numbers on the wire

beforeAll(async () => {
  ({ ts, native } = bothDataPaths({
    addresses: A,
    peerNet: PEER_NET,
    ports: { ...PORTS, delivery: 0, gateway: GATEWAY_PORT },
  }));
  for (const dp of [ts, native] as DataPath[]) {
    await dp.start();
    for (const n of NETWORKS) dp.setNetwork({ vni: n.vni, encrypted: true });
    for (const p of PEERS) await dp.addPeer(p);
  }
  for (const p of PEERS) {
    sealedAt.set(p.id, []);
    const s = await sockets.bind(p.address, PORTS.peerEsp);
    s.on('message', (m: Buffer) => sealedAt.get(p.id)!.push(m.readUInt32BE(4)));
  }
  vtep = await sockets.bind(A.vtep, PORTS.vtep);
});

afterAll(async () => {
  await native?.stop();
  await ts?.stop();
  sockets.closeAll();
});

/** What is in service, by pair, as both paths report it. */
function inService(status: DataPathStatus, peers: Set<string>, vnis: Set<number>): unknown {
  return status.pairs
    .filter((p) => peers.has(p.peer) && vnis.has(p.vni))
    .map((p) => ({
      pair: `${p.peer}/${p.vni}`,
      outbound: p.outbound && { spi: p.outbound.spi, epoch: p.outbound.epoch, headroom: p.outbound.sequenceHeadroom },
      inbound: p.inbound.map((s) => ({ spi: s.spi, epoch: s.epoch })).sort((a, b) => a.spi - b.spi),
    }))
    .sort((a, b) => (a.pair < b.pair ? -1 : 1));
}

it(`${STEPS} random table changes: the TypeScript and the native data path decide alike`, async () => {
  const rng = new Prng(FUZZ_SEED);
  console.log(`SA parity seed ${FUZZ_SEED} (rerun with VEIL_FUZZ_SEED=${FUZZ_SEED})`);
  // A key per (direction, peer, network, epoch, incarnation): a restarted peer's are new ones.
  const keys = new Map<string, SecretKey>();
  const keyOf = (name: string) => {
    let k = keys.get(name);
    if (!k) keys.set(name, (k = new SecretKey(rng.bytes(20))));
    return k;
  };
  const incarnation = new Map<string, number>(PEERS.map((p) => [p.id, 0]));
  const indexOf = new Map<string, number>(PEERS.map((p) => [p.id, p.index]));
  const asAdded = (peer: (typeof PEERS)[number]) => ({ ...peer, index: indexOf.get(peer.id)! });
  const peersUp = new Set<string>(PEERS.map((p) => p.id));
  const networksUp = new Set<number>(NETWORKS.map((n) => n.vni));
  const generation = new Map<number, number>(NETWORKS.map((n) => [n.vni, 0])); // a network created again
  const newest = new Map<number, number>(NETWORKS.map((n) => [n.vni, 1])); // epoch installed, by network
  const counts = new Map<string, number>();
  const count = (what: string) => counts.set(what, (counts.get(what) ?? 0) + 1);
  /** `${peer}/${vni}` → the outbound SA last activated for the pair (both paths accepted it). */
  const activated = new Map<string, SaKeySpec>();
  /** Each outbound SA of the TypeScript path → the peer and host index it last sealed for. */
  const sealedFor = new Map<object, { peerId: string; index: number }>();

  for (let step = 0; step < STEPS; step++) {
    const peer = PEERS[rng.int(PEERS.length)]!;
    const other = PEERS.find((p) => p !== peer)!;
    const net = NETWORKS[rng.int(NETWORKS.length)]!;
    // Mostly the live epochs around the network's newest (keys then live long enough to come back), else any.
    const top = newest.get(net.vni)!;
    const epoch = rng.int(4) ? Math.max(1, top - 2 + rng.int(4)) : 1 + rng.int(top + 2);
    const dir = rng.int(2) ? 'in' : 'out';
    const spec = (): SaKeySpec => {
      // wire.md "SPI layout": the sender's host index, so ours for outbound and the peer's for inbound.
      const spiOf = (host: number, n: (typeof NETWORKS)[number]) =>
        (((epoch % 4) << 30) | (host << 16) | n.index) >>> 0;
      const keyName = (p: (typeof PEERS)[number]) =>
        `${dir}/${p.id}/${net.vni}.${generation.get(net.vni)}/${epoch}/${incarnation.get(p.id)}`;
      const base: SaKeySpec = {
        spi: spiOf(dir === 'in' ? indexOf.get(peer.id)! : SELF, net),
        keymat: keyOf(keyName(peer)),
        esn: true,
        vni: net.vni,
        peerId: peer.id,
        epoch,
      };
      // Now and then the key under a wrong name: another SPI (unused, or the other network's), no ESN,
      // another epoch, the other network; or the other peer's key under this peer's name.
      const wrong = rng.int(14);
      const otherNet = NETWORKS.find((n) => n !== net)!;
      if (wrong === 0) return { ...base, spi: (base.spi ^ 0x8000) >>> 0 };
      if (wrong === 1) return { ...base, spi: (base.spi ^ 3) >>> 0 };
      if (wrong === 2) return { ...base, esn: false };
      if (wrong === 3) return { ...base, epoch: epoch + 1 };
      if (wrong === 4 && networksUp.has(otherNet.vni))
        return { ...base, vni: otherNet.vni, spi: spiOf(dir === 'in' ? indexOf.get(peer.id)! : SELF, otherNet) };
      if (wrong === 5) return { ...base, keymat: keyOf(keyName(other)) };
      return base;
    };
    const op = rng.int(20);
    let what: string;
    let change: (dp: DataPath) => void | Promise<void>;
    if (!peersUp.has(peer.id)) {
      // Back under its index, or renumbered (its host record rewritten under another one).
      if (rng.int(2)) indexOf.set(peer.id, INDEXES[peer.id]![rng.int(3)]!);
      const added = asAdded(peer);
      what = `add ${peer.id} as ${added.index}`;
      peersUp.add(peer.id);
      change = (dp) => dp.addPeer(added);
    } else if (!networksUp.has(net.vni)) {
      what = `network ${net.vni} again`;
      networksUp.add(net.vni);
      change = (dp) => dp.setNetwork({ vni: net.vni, encrypted: true });
    } else if (op < 7) {
      const s = spec();
      what = `${dir === 'in' ? 'install' : 'activate'} ${peer.id}/${net.vni} epoch ${s.epoch} spi ${s.spi.toString(16)}${s.esn ? '' : ' no-esn'}`;
      change = (dp) => {
        if (dir === 'in') dp.installInbound(s);
        else dp.activateOutbound(s);
        if (dp !== ts) return;
        newest.set(s.vni, Math.max(newest.get(s.vni)!, s.epoch));
        if (dir === 'out') activated.set(`${peer.id}/${s.vni}`, s);
      };
    } else if (op < 9) {
      what = `retire inbound ${peer.id}/${net.vni} epoch ${epoch}`;
      change = (dp) => dp.retireInbound(peer.id, net.vni, epoch);
    } else if (op < 10) {
      what = `remove outbound ${peer.id}/${net.vni}`;
      change = (dp) => dp.removeOutbound(peer.id, net.vni);
    } else if (op < 11) {
      what = `remove ${peer.id}${rng.int(2) ? ' (it restarts)' : ''}`;
      if (what.endsWith('restarts)')) incarnation.set(peer.id, incarnation.get(peer.id)! + 1);
      peersUp.delete(peer.id);
      change = (dp) => dp.removePeer(peer.id);
    } else if (op < 12) {
      what = `remove network ${net.vni}`;
      networksUp.delete(net.vni);
      generation.set(net.vni, generation.get(net.vni)! + 1);
      newest.set(net.vni, 1);
      change = (dp) => dp.removeNetwork(net.vni);
    } else if (op < 13) {
      // As the gateway replaces a peer whose index changed: removed, added under the new one, and its
      // outbound SAs activated again (the same keys: same ids, keys and incarnations).
      const from = indexOf.get(peer.id)!;
      indexOf.set(peer.id, INDEXES[peer.id]!.filter((i) => i !== from)[rng.int(2)]!);
      const added = asAdded(peer);
      const again = [...networksUp].flatMap((vni) => {
        const s = activated.get(`${peer.id}/${vni}`);
        const sa = ts.forwarder.sas.outbound(peer.id, vni);
        return s && sa?.spi === s.spi && sa.label.epoch === s.epoch ? [s] : [];
      });
      what = `renumber ${peer.id} ${from} → ${added.index}, ${again.length} outbound again`;
      change = async (dp) => {
        await dp.removePeer(peer.id);
        await dp.addPeer(added);
        for (const s of again) dp.activateOutbound(s);
      };
    } else {
      what = `seal ${peer.id}/${net.vni}`;
      change = () => {};
    }
    const outcome: Array<string | undefined> = [];
    for (const dp of [ts, native] as DataPath[]) {
      try {
        await change(dp);
        outcome.push('ok');
      } catch (err) {
        outcome.push((err as { code?: string }).code ?? (err as Error).message);
      }
    }
    count(outcome[0]!);
    expect(outcome[1], `step ${step}: ${what}`).toBe(outcome[0]);
    expect(inService(native.status(), peersUp, networksUp), `step ${step}: ${what}`).toEqual(
      inService(ts.status(), peersUp, networksUp),
    );
    // The next frame of the pair leaves with the same sequence number from both.
    if (what.startsWith('seal') || what.startsWith('activate') || what.startsWith('renumber')) {
      const r = ts.forwarder.outbound(peer.id, vxlanDatagram(net.vni), A.vtep, 1);
      if (!r.ok || r.to !== 'underlay') continue;
      const expected = new DataView(r.datagram.buffer, r.datagram.byteOffset).getUint32(4);
      const sa = ts.forwarder.sas.outbound(peer.id, net.vni)!;
      const last = sealedFor.get(sa);
      if (last && last.peerId !== peer.id) count('sealed on, moved from the other peer');
      else if (last && last.index !== indexOf.get(peer.id)) count('sealed on, peer renumbered');
      sealedFor.set(sa, { peerId: peer.id, index: indexOf.get(peer.id)! });
      const seen = sealedAt.get(peer.id)!;
      const before = seen.length;
      await new Promise<void>((resolve) =>
        vtep.send(vxlanDatagram(net.vni), GATEWAY_PORT, gatewayAddress(PEER_NET, indexOf.get(peer.id)!), () =>
          resolve(),
        ),
      );
      await waitUntil(`step ${step}: the sealed frame at ${peer.id}`, () => seen.length > before, 5_000, 1);
      expect(seen[seen.length - 1], `step ${step}: ${what}: sequence number`).toBe(expected);
    }
  }
  console.log(`SA parity outcomes: ${JSON.stringify(Object.fromEntries(counts))}`);
  // The sequence exercised the refusals this is about, not only the happy path, and SAs sealing on
  // after their peer was renumbered.
  for (const what of ['ok', 'VEIL_ERR_SA_EPOCH_TOO_OLD', 'VEIL_ERR_SA_KEY_REUSED', 'sealed on, peer renumbered'])
    expect(counts.get(what) ?? 0, what).toBeGreaterThan(0);
});
