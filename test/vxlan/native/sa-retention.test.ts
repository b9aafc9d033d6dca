// What the native SA table remembers of SAs taken out of service, and what it refuses
// (docs/wire.md "Sequence numbers and replay"): a key never seals with a fresh counter once used,
// an epoch more than two behind its network's high-water mark is refused, a retired SA keeps no key,
// and a deleted network takes its SAs and marks with it.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadNative, type NativeSaSpec } from '../../../src/vxlan/native/addon.js';
import { NativeLoopback } from '../../support/native-loopback.js';

const addon = loadNative();
const VNI = 42;
let net: NativeLoopback;

/** An SA with a fresh random key, held only as key XOR mask so inMemory() can look for the key. */
interface Sa extends Omit<NativeSaSpec, 'key'> {
  masked: Buffer;
  mask: Buffer;
}

function sa(spi: number, epoch: number, peer = 5, vni = VNI): Sa {
  const key = randomBytes(256).subarray(0, 16);
  const mask = randomBytes(16);
  const masked = Buffer.alloc(16);
  for (let i = 0; i < 16; i++) masked[i] = key[i]! ^ mask[i]!;
  key.fill(0);
  return { spi, salt: Buffer.alloc(4, 9), esn: true, vni, peer, epoch, masked, mask };
}
/**
 * The key unmasked into one buffer, no intermediate copy left behind; the caller zeroes it. Off V8's heap
 * from the start (typed arrays of 64 bytes or less live on it, and move, copy left behind, when the
 * addon takes their address).
 */
function unmask(s: Sa): Buffer {
  const key = Buffer.alloc(256).subarray(0, 16);
  for (let i = 0; i < 16; i++) key[i] = s.masked[i]! ^ s.mask[i]!;
  return key;
}
const spec = (s: Sa, changes: Partial<NativeSaSpec> = {}): NativeSaSpec => ({
  spi: s.spi,
  key: unmask(s),
  salt: s.salt,
  esn: s.esn,
  vni: s.vni,
  peer: s.peer,
  epoch: s.epoch,
  ...changes,
});
const codeOf = (f: () => void): string | undefined => {
  try {
    f();
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
};

beforeAll(async () => {
  net = await NativeLoopback.open(addon, { peers: [5, 6, 7], portBase: 28500 });
  addon.dpSetNetwork(net.dp, VNI, true);
});

afterAll(() => net?.close());

const sealOne = (peer = 5, vni = VNI) => net.sealOne(peer, vni);
/** ESP datagrams sealed under `s`, sequence numbers 1..n. */
function sealedBy(s: Sa, n: number): Buffer[] {
  const key = unmask(s);
  try {
    return net.sealedBy(s, key, n);
  } finally {
    key.fill(0);
  }
}
const deliver = (packets: Buffer[]) => net.deliver(packets);

/**
 * Whether the key of `s` is anywhere in this process's writable memory (the C heap included):
 * /proc/self/mem, searched for its first four bytes, each hit compared with the masked copy. The
 * test never holds the whole key itself outside the short-lived spec() copies it zeroes.
 */
function inMemory(s: Sa): boolean {
  const prefix = Buffer.from([0, 1, 2, 3].map((i) => s.masked[i]! ^ s.mask[i]!));
  const rest = (chunk: Buffer, at: number) => {
    for (let i = 4; i < 16; i++) if ((chunk[at + i]! ^ s.mask[i]!) !== s.masked[i]) return false;
    return true;
  };
  const fd = openSync('/proc/self/mem', 'r');
  try {
    for (const line of readFileSync('/proc/self/maps', 'utf8').trim().split('\n')) {
      const [range, perms, , , , path] = line.split(/\s+/);
      if (!perms!.startsWith('rw') || path?.startsWith('[v')) continue;
      const [start, end] = range!.split('-').map((x) => parseInt(x, 16)) as [number, number];
      if (end - start > 2 ** 30) continue; // a sanitizer's shadow memory (terabytes); nothing of the process's own is that large
      for (let off = start; off < end; off += chunk.length - 16) {
        let n: number;
        try {
          n = readSync(fd, chunk, 0, Math.min(chunk.length, end - off), off);
        } catch {
          break; // a mapping that went away or cannot be read
        }
        for (let at = chunk.indexOf(prefix); at >= 0 && at + 16 <= n; at = chunk.indexOf(prefix, at + 1))
          if (rest(chunk, at)) return true;
      }
    }
    return false;
  } finally {
    closeSync(fd);
    chunk.fill(0); // what it copied must not be found by the next search
  }
}
const chunk = Buffer.alloc(4 << 20);

/** Activates (or installs inbound) with a copy of the key that is zeroed as soon as the addon has it. */
function activate(s: Sa, changes: Partial<NativeSaSpec> = {}): void {
  const x = spec(s, changes);
  try {
    addon.dpSetOutbound(net.dp, x);
  } finally {
    x.key.fill(0);
  }
}
function install(s: Sa, changes: Partial<NativeSaSpec> = {}): void {
  const x = spec(s, changes);
  try {
    addon.dpInstallInbound(net.dp, x);
  } finally {
    x.key.fill(0);
  }
}

describe('native SA table: never a fresh counter under a used key', () => {
  it('an epoch more than two behind the pair’s high-water mark is refused, in both directions, across a peer removal', async () => {
    const e = [1, 2, 3, 4].map((epoch) => sa(0x1000 + epoch, epoch));
    activate(e[0]!);
    expect([await sealOne(), await sealOne()]).toEqual([1, 2]);
    for (const s of e.slice(1)) activate(s); // epoch 1 retired, then more than two epochs behind
    expect(codeOf(() => activate(e[0]!))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    expect(codeOf(() => install(e[0]!))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    // Two behind is still in reach, and resumes where it stopped.
    activate(e[1]!);
    expect(await sealOne()).toBe(1);
    activate(e[3]!);
    activate(e[1]!);
    expect(await sealOne()).toBe(2);
    // The mark outlives the peer: the same keys may come back with it (same incarnation).
    addon.dpRemovePeer(net.dp, 5);
    net.addPeer(5);
    expect(codeOf(() => activate(e[0]!))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    activate(e[1]!);
    expect(await sealOne()).toBe(3);
    activate(e[3]!);
  });

  it('a peer removed and added again: its same keys resume, new keys (a new incarnation) start fresh, and neither forgets the other', async () => {
    const old = sa(0x2005, 5);
    const oldIn = sa(0x2105, 5);
    activate(old);
    install(oldIn);
    expect([await sealOne(), await sealOne()]).toEqual([1, 2]);
    const first = sealedBy(oldIn, 5);
    expect(await deliver(first)).toBe(5);
    addon.dpRemovePeer(net.dp, 5);
    net.addPeer(5);
    // The same incarnation came back: same keys, same counter, same window.
    activate(old);
    install(oldIn);
    expect(await sealOne()).toBe(3);
    expect(await deliver(first)).toBe(0);
    // The peer restarted: new keys under the same SPIs and epoch are not a reuse.
    const fresh = { ...sa(0x2005, 5) };
    const freshIn = { ...sa(0x2105, 5) };
    addon.dpRemovePeer(net.dp, 5);
    net.addPeer(5);
    activate(fresh);
    install(freshIn);
    expect(await sealOne()).toBe(1);
    expect(await deliver(sealedBy(freshIn, 3))).toBe(3);
    // The replaced keys were retired, not forgotten: back again, they resume.
    activate(old);
    install(oldIn);
    expect(await sealOne()).toBe(4);
    expect(await deliver(first)).toBe(0);
  });

  it('the same key under another SPI, ESN setting or epoch is refused in both directions (VEIL_ERR_SA_KEY_REUSED)', async () => {
    const out = sa(0x3007, 7);
    const inb = sa(0x3107, 7);
    activate(out);
    install(inb);
    expect(await sealOne()).toBe(1);
    for (const changes of [{ spi: 0x3017 }, { esn: false }, { epoch: 8 }]) {
      expect(
        codeOf(() => activate(out, changes)),
        JSON.stringify(changes),
      ).toBe('VEIL_ERR_SA_KEY_REUSED');
      expect(
        codeOf(() => install(inb, changes)),
        JSON.stringify(changes),
      ).toBe('VEIL_ERR_SA_KEY_REUSED');
    }
    // Retired, the key is still held to its name.
    addon.dpRemoveOutbound(net.dp, 5, VNI);
    addon.dpRemoveInbound(net.dp, inb.spi);
    expect(codeOf(() => activate(out, { esn: false }))).toBe('VEIL_ERR_SA_KEY_REUSED');
    expect(codeOf(() => install(inb, { spi: 0x3117 }))).toBe('VEIL_ERR_SA_KEY_REUSED');
    activate(out);
    expect(await sealOne()).toBe(2);
  });

  it('a removed peer’s retired SAs are forgotten once its network is three epochs further, and its mark moves past them', () => {
    addon.dpSetNetwork(net.dp, 43, true);
    const mine = sa(0x4001, 1, 6, 43);
    const mineIn = sa(0x4101, 1, 6, 43);
    activate(mine);
    install(mineIn);
    const before = addon.dpStats(net.dp).retired;
    addon.dpRemovePeer(net.dp, 6);
    expect(addon.dpStats(net.dp).retired).toEqual({ inbound: before.inbound + 1, outbound: before.outbound + 1 });
    // Epochs are numbered per network: once peer 5 is at epoch 4, epoch 1 can never be installed again.
    for (const epoch of [2, 3, 4]) activate(sa(0x4000 + epoch, epoch, 5, 43));
    // Peer 6's two are gone; peer 5's epochs 2 and 3 were retired meanwhile.
    expect(addon.dpStats(net.dp).retired).toEqual({ inbound: before.inbound, outbound: before.outbound + 2 });
    net.addPeer(6);
    expect(codeOf(() => activate(mine))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    expect(codeOf(() => install(mineIn))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    activate(sa(0x4002, 2, 6, 43)); // a key of a live epoch is welcome
  });
});

describe('native SA table: keys do not outlive their SAs', () => {
  it('a retired SA keeps no key: the raw key is nowhere in memory once retired, its peer removed or its network deleted', async () => {
    const out = sa(0x5001, 1, 5, 77);
    const inb = sa(0x5101, 1, 5, 77);
    // The probe finds a key the test itself still holds (in a Buffer on the C heap)...
    const held = spec(out);
    expect(inMemory(out)).toBe(true);
    held.key.fill(0);
    expect(inMemory(out)).toBe(false);
    addon.dpSetNetwork(net.dp, 77, true);
    activate(out);
    install(inb);
    await sealOne(5, 77);
    // ...and no copy once they are out of service, though the table still resumes them.
    addon.dpRemoveOutbound(net.dp, 5, 77);
    addon.dpRemoveInbound(net.dp, inb.spi);
    expect(inMemory(out)).toBe(false);
    expect(inMemory(inb)).toBe(false);
    activate(out);
    install(inb);
    expect(await sealOne(5, 77)).toBe(2);
    addon.dpRemovePeer(net.dp, 5);
    expect(inMemory(out)).toBe(false);
    net.addPeer(5);
    activate(out);
    install(inb);
    addon.dpRemoveNetwork(net.dp, 77);
    expect(inMemory(out)).toBe(false);
    expect(inMemory(inb)).toBe(false);
  });

  it('a deleted network takes its SAs and marks with it: memory does not grow with networks created and deleted, and its VNI starts again at epoch 1', async () => {
    const retired = () => addon.dpStats(net.dp).retired;
    const before = retired();
    for (let round = 0; round < 20; round++) {
      addon.dpSetNetwork(net.dp, 88, true);
      for (const epoch of [1, 2, 3, 4, 5]) {
        activate(sa(0x6000 + epoch, epoch, 5, 88));
        install(sa(0x6100 + epoch, epoch, 5, 88));
        if (epoch > 2) addon.dpRemoveInbound(net.dp, 0x6100 + epoch - 2);
      }
      addon.dpRemoveNetwork(net.dp, 88);
      expect(retired()).toEqual(before);
    }
    // A network created again under the VNI is a new network (new id, new epoch secrets, so new keys).
    addon.dpSetNetwork(net.dp, 88, true);
    activate(sa(0x6001, 1, 5, 88));
    expect(await sealOne(5, 88)).toBe(1);
  });
});

describe('native SA table: one key, one place (a peer renumbered keeps its keys)', () => {
  // Host indexes are not in the key derivation (docs/keys.md "SA keys") and our outbound SPI is made from
  // our own index: a peer whose host record comes back under another index (an etcd restore) brings the
  // same outbound key under the same name, and the same inbound key under another SPI.
  const FREE = 7; // an index no host holds
  const renumber = (from: number, to: number) => {
    addon.dpRemovePeer(net.dp, from);
    net.addPeer(to);
  };
  const outboundOf = (peer: number, vni: number) =>
    addon.dpStats(net.dp).pairs.find((p) => p.peer === peer && p.vni === vni)?.outbound;
  beforeEach(() => {
    addon.dpRemovePeer(net.dp, FREE);
    net.addPeer(5); // back, if a failed test left it renumbered
  });

  it('its outbound SA resumes its counter under the new index; its inbound key under the new SPI is refused', async () => {
    addon.dpSetNetwork(net.dp, 90, true);
    const out = sa(0x9001, 1, 5, 90);
    const inb = sa(0x9101, 1, 5, 90);
    activate(out);
    install(inb);
    expect([await sealOne(5, 90), await sealOne(5, 90)]).toEqual([1, 2]);
    renumber(5, FREE);
    activate(out, { peer: FREE });
    expect(await sealOne(FREE, 90)).toBe(3);
    expect(codeOf(() => install(inb, { peer: FREE, spi: 0x9171 }))).toBe('VEIL_ERR_SA_KEY_REUSED');
    renumber(FREE, 5);
    activate(out);
    install(inb);
    expect(await sealOne(5, 90)).toBe(4);
  });

  it('an epoch the network left behind is refused under the new index too: a forgotten key never starts afresh', async () => {
    addon.dpSetNetwork(net.dp, 91, true);
    const e = [1, 2, 3, 4].map((epoch) => sa(0x9100 + epoch, epoch, 5, 91));
    activate(e[0]!);
    expect(await sealOne(5, 91)).toBe(1);
    for (const s of e.slice(1)) activate(s); // epoch 1 retired, then forgotten
    expect(await sealOne(5, 91)).toBe(1);
    renumber(5, FREE);
    expect(codeOf(() => activate(e[0]!, { peer: FREE }))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    expect(codeOf(() => install(sa(0x9111, 1, FREE, 91)))).toBe('VEIL_ERR_SA_EPOCH_TOO_OLD');
    activate(e[3]!, { peer: FREE });
    expect(await sealOne(FREE, 91)).toBe(2);
    renumber(FREE, 5);
  });

  it('the key under another network or another name anywhere is refused; under its name for another peer it moves there, counter or window and all', async () => {
    for (const vni of [92, 93]) addon.dpSetNetwork(net.dp, vni, true);
    const out = sa(0x9201, 1, 5, 92);
    const inb = sa(0x9211, 1, 5, 92);
    activate(out);
    install(inb);
    expect(await sealOne(5, 92)).toBe(1);
    for (const changes of [{ vni: 93 }, { peer: 6, spi: 0x9202 }, { peer: 6, vni: 93 }]) {
      expect(
        codeOf(() => activate(out, changes)),
        JSON.stringify(changes),
      ).toBe('VEIL_ERR_SA_KEY_REUSED');
      expect(
        codeOf(() => install(inb, changes)),
        JSON.stringify(changes),
      ).toBe('VEIL_ERR_SA_KEY_REUSED');
    }
    // In service for peer 5, activated for peer 6: one SA, one counter, now peer 6's.
    activate(out, { peer: 6 });
    expect(outboundOf(5, 92)).toBeUndefined();
    expect(await sealOne(6, 92)).toBe(2);
    const window = sealedBy(inb, 2);
    expect(await deliver(window.slice(0, 1))).toBe(1);
    install(inb, { peer: 6 });
    expect(addon.dpStats(net.dp).inbound.find((s) => s.spi === inb.spi)).toMatchObject({ peer: 6, vni: 92, opened: 1 });
    expect(await deliver(window)).toBe(1);
    // Retired, it moves back the same way.
    addon.dpRemovePeer(net.dp, 6);
    net.addPeer(6);
    activate(out);
    expect(await sealOne(5, 92)).toBe(3);
  });
});
