// Failure paths of the native data plane, through veil_native_faults (the same code built with
// native/fault.h's fault injection): for every allocation or system call a step makes, the step is run
// again with exactly that one failing. A step hit by a failure must fail as a whole, saying why, and leave
// what was in service in service: never a half-added peer, never a used key forgotten (a later
// re-activation would restart its counter), never a thread left running.
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeAddonPath, type NativeAddon, type NativeSaSpec } from '../../../src/vxlan/native/addon.js';
import { NativeLoopback } from '../../support/native-loopback.js';
import { waitUntil } from '../../support/wait.js';

// The fault-injecting twin is built beside the addon.
const ADDON = join(dirname(nativeAddonPath()), 'veil_native_faults.node');
type FaultAddon = NativeAddon & { faultAfter(n: number): void; faultPending(): boolean };
const addon = createRequire(import.meta.url)(ADDON) as FaultAddon;

interface Outcome {
  /** The error code, when the step failed. */
  code?: string;
  message?: string;
  /** Whether the injected failure happened during the step. */
  fired: boolean;
}

/** Runs `step` with the nth checked allocation or system call failing. */
function withFault<T>(n: number, step: () => T): Outcome & { value?: T } {
  addon.faultAfter(n);
  try {
    const value = step();
    return { fired: !addon.faultPending(), value };
  } catch (err) {
    const e = err as { code?: string; message: string };
    return { fired: !addon.faultPending(), code: e.code ?? '', message: e.message };
  } finally {
    addon.faultAfter(0);
  }
}

/**
 * Runs `step` with its 1st, 2nd, ... checked call failing, until one run reaches no failure point (and so
 * succeeds). Each failed run must have been hit by the failure (never a failure of its own), and each run
 * hit by one must have failed (never half done); `afterFailure` checks what was left. Returns the number
 * of failure points.
 */
async function sweep(
  step: () => void,
  afterFailure: (o: Outcome, n: number) => void | Promise<void>,
  limit = 60,
): Promise<number> {
  for (let n = 1; n <= limit; n++) {
    const o = withFault(n, step);
    if (!o.fired) {
      expect(o.code, `run ${n} failed without an injected failure: ${o.message}`).toBeUndefined();
      return n - 1;
    }
    expect(o.code, `run ${n}: hit by the failure, yet it succeeded`).toBeDefined();
    await afterFailure(o, n);
  }
  throw new Error(`more than ${limit} failure points`);
}

const fds = () => readdirSync('/proc/self/fd').length;
/** Threads of this process named `name` (the data threads name themselves veil-out and veil-in). */
const threads = (name: string) =>
  readdirSync('/proc/self/task').filter((t) => {
    try {
      return readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim() === name;
    } catch {
      return false; // the thread ended meanwhile
    }
  }).length;

describe('native data plane under allocation and system call failures', () => {
  it('dpCreate reports each failure with its cause, and leaves no descriptor behind', async () => {
    const config = {
      underlayAddress: '127.0.0.1',
      hostAddress: '127.0.0.1',
      vtepAddress: '127.0.0.1',
      peerNet: '127.77.64.0',
      espPort: 29500,
      plainPort: 29501,
      gatewayPort: 29504,
      deliveryPort: 0,
    };
    const before = fds();
    const points = await sweep(
      () => addon.dpClose(addon.dpCreate(config)),
      (o) => {
        expect(['VEIL_ERR_NATIVE_NOMEM', 'VEIL_ERR_NATIVE_IO']).toContain(o.code);
        // The bare default would say nothing about what failed.
        expect(o.message).not.toBe('cannot create the data plane');
        expect(fds()).toBe(before);
      },
    );
    expect(points).toBeGreaterThan(10);
  });

  it('dpStart: a thread that cannot start stops the one already started, and a second start runs one thread per direction', async () => {
    const dp = addon.dpCreate({
      underlayAddress: '127.0.0.1',
      hostAddress: '127.0.0.1',
      vtepAddress: '127.0.0.1',
      peerNet: '127.77.64.0',
      espPort: 29502,
      plainPort: 29503,
      gatewayPort: 29505,
      deliveryPort: 0,
    });
    try {
      const points = await sweep(
        () => addon.dpStart(dp),
        (o) => {
          expect(o.code).toBe('VEIL_ERR_NATIVE_IO');
          expect([threads('veil-out'), threads('veil-in')]).toEqual([0, 0]);
        },
      );
      expect(points).toBe(2);
      expect([threads('veil-out'), threads('veil-in')]).toEqual([1, 1]);
      addon.dpStart(dp); // started already: nothing more
      expect([threads('veil-out'), threads('veil-in')]).toEqual([1, 1]);
    } finally {
      addon.dpClose(dp);
    }
    expect([threads('veil-out'), threads('veil-in')]).toEqual([0, 0]);
  });
});

describe('native tables under allocation failures', () => {
  const VNI = 42;
  const PLAIN = 43;
  let net: NativeLoopback;
  const sa = (spi: number, epoch: number, vni = VNI): NativeSaSpec => ({
    spi,
    key: randomBytes(16),
    salt: Buffer.alloc(4, 9),
    esn: true,
    vni,
    peer: 5,
    epoch,
  });
  const retiredCount = () => {
    const r = addon.dpStats(net.dp).retired;
    return r.inbound + r.outbound;
  };

  beforeAll(async () => {
    net = await NativeLoopback.open(addon, { peers: [5, 8], portBase: 29600 });
    addon.dpSetNetwork(net.dp, VNI, true);
    addon.dpSetNetwork(net.dp, PLAIN, false);
  });
  afterAll(() => net?.close());

  it('activating a new outbound key: a failure at any step keeps the active SA in service, and no used key is ever forgotten', async () => {
    // One name, one new key after the other (a peer restarting): each activation retires the previous
    // SA, so the retired list grows past its first allocations and every growth step is hit.
    let current = sa(0x1001, 1);
    let sealed = 0; // by `current`
    addon.dpSetOutbound(net.dp, current);
    expect(await net.sealOne(5, VNI)).toBe(++sealed);
    for (let round = 0; round < 40; round++) {
      const next = sa(0x1001, 1);
      await sweep(
        () => addon.dpSetOutbound(net.dp, next),
        async (o) => {
          expect(o.code).toBe('VEIL_ERR_NATIVE_NOMEM');
          expect(await net.sealOne(5, VNI)).toBe(++sealed);
        },
      );
      expect(await net.sealOne(5, VNI)).toBe(1);
      // The replaced key was kept, not freed: back in service, it resumes.
      addon.dpSetOutbound(net.dp, current);
      expect(await net.sealOne(5, VNI)).toBe(++sealed);
      addon.dpSetOutbound(net.dp, next);
      expect(await net.sealOne(5, VNI)).toBe(2);
      current = next;
      sealed = 2;
    }
    expect(retiredCount()).toBeGreaterThanOrEqual(40);
  });

  it('a known key moving to another peer index (a peer renumbered): a failure leaves it where it was, its counter intact', async () => {
    const vni = 3000;
    addon.dpSetNetwork(net.dp, vni, true);
    const out = sa(0x6001, 1, vni);
    addon.dpSetOutbound(net.dp, out);
    let sealed = 0;
    expect(await net.sealOne(5, vni)).toBe(++sealed);
    // In service for peer 5, asked for peer 8.
    await sweep(
      () => addon.dpSetOutbound(net.dp, { ...out, peer: 8 }),
      async (o) => {
        expect(o.code).toBe('VEIL_ERR_NATIVE_NOMEM');
        expect(await net.sealOne(5, vni)).toBe(++sealed);
      },
    );
    expect(await net.sealOne(8, vni)).toBe(++sealed);
    // Retired with peer 8, asked for peer 5.
    addon.dpRemovePeer(net.dp, 8);
    await sweep(
      () => addon.dpSetOutbound(net.dp, out),
      (o) => {
        expect(o.code).toBe('VEIL_ERR_NATIVE_NOMEM');
        expect(addon.dpStats(net.dp).pairs.find((p) => p.peer === 5 && p.vni === vni)?.outbound).toBeUndefined();
      },
    );
    expect(await net.sealOne(5, vni)).toBe(++sealed);
    net.addPeer(8);
  });

  it('taking an SA out of service: a failure keeps it in service (its counter or window intact) rather than forget it', async () => {
    for (let round = 0; round < 40; round++) {
      const epoch = 1; // one epoch: nothing is pruned, the retired list keeps growing
      const out = sa(0x2001 + round, epoch, 1000 + round);
      const inb = sa(0x3001 + round, epoch, 1000 + round);
      addon.dpSetNetwork(net.dp, 1000 + round, true);
      addon.dpSetOutbound(net.dp, out);
      addon.dpInstallInbound(net.dp, inb);
      expect(await net.sealOne(5, 1000 + round)).toBe(1);
      const window = net.sealedBy(inb, inb.key, 2);
      expect(await net.deliver(window.slice(0, 1))).toBe(1);
      await sweep(
        () => addon.dpRemoveOutbound(net.dp, 5, 1000 + round),
        async (o) => {
          expect(o.code).toBe('VEIL_ERR_NATIVE_NOMEM');
          expect(
            addon.dpStats(net.dp).pairs.find((p) => p.peer === 5 && p.vni === 1000 + round)?.outbound,
          ).toBeDefined();
        },
      );
      await sweep(
        () => addon.dpRemoveInbound(net.dp, inb.spi),
        (o) => {
          expect(o.code).toBe('VEIL_ERR_NATIVE_NOMEM');
          expect(addon.dpStats(net.dp).inbound.map((s) => s.spi)).toContain(inb.spi);
        },
      );
      // Back in service, both resume: the counter at 2, the window refusing what it saw.
      addon.dpSetOutbound(net.dp, out);
      addon.dpInstallInbound(net.dp, inb);
      expect(await net.sealOne(5, 1000 + round)).toBe(2);
      expect(await net.deliver(window)).toBe(1);
    }
  });

  it('removing a peer: a failure keeps the peer and its SAs in service', async () => {
    const out = sa(0x4001, 5);
    addon.dpSetOutbound(net.dp, out);
    let sealed = 0;
    expect(await net.sealOne(5, VNI)).toBe(++sealed);
    for (let round = 0; round < 40; round++) {
      await sweep(
        () => addon.dpRemovePeer(net.dp, 5),
        async (o) => {
          expect(o.code).toBe('VEIL_ERR_NATIVE_NOMEM');
          expect(await net.sealOne(5, VNI)).toBe(++sealed);
        },
      );
      net.addPeer(5);
      addon.dpSetOutbound(net.dp, out);
      expect(await net.sealOne(5, VNI)).toBe(++sealed);
      // One more retired SA per round, so the retired list's growth steps are all met.
      addon.dpSetOutbound(net.dp, sa(0x5001, 5, 2000 + round));
      addon.dpRemoveOutbound(net.dp, 5, 2000 + round);
    }
  });

  it('adding a peer: a failure adds nothing (no peer without its pairs), and once it succeeds, frames reach it', async () => {
    const points = await sweep(
      () => addon.dpAddPeer(net.dp, 7, net.peerAddress(7)),
      async (o) => {
        expect(o.code).toBe('VEIL_ERR_NATIVE_NOMEM');
        // Not half there: its gateway address names no peer.
        const unknown = () => addon.dpStats(net.dp).unattributed['unknown-peer'] ?? 0;
        const before = unknown();
        await net.sendFromVtep(7, PLAIN);
        await waitUntil('unknown-peer', () => unknown() > before);
      },
    );
    expect(points).toBeGreaterThan(2);
    const plain = await net.sockets.bind(net.peerAddress(7), net.ports.peerPlain);
    let got = 0;
    plain.on('message', () => got++);
    await net.sendFromVtep(7, PLAIN);
    await waitUntil('the plain frame at peer 7', () => got === 1);
  });

  it('adding a network: a failure adds nothing, and once it succeeds, every peer has its pair', async () => {
    await sweep(
      () => addon.dpSetNetwork(net.dp, 4444, false),
      async (o) => {
        expect(o.code).toBe('VEIL_ERR_NATIVE_NOMEM');
        const unknown = () => addon.dpStats(net.dp).unattributed['unknown-vni'] ?? 0;
        const before = unknown();
        await net.sendFromVtep(5, 4444);
        await waitUntil('unknown-vni', () => unknown() > before);
      },
    );
    const before = net.plainSeen.get(5)!;
    await net.sendFromVtep(5, 4444);
    await waitUntil('the plain frame at peer 5', () => net.plainSeen.get(5)! > before);
  });
});
