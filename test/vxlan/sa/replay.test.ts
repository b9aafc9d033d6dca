import { describe, expect, it } from 'vitest';
import { REPLAY_DUPLICATE, REPLAY_TOO_OLD, ReplayWindow } from '../../../src/vxlan/sa/replay.js';

const W = 4096;
const TOP32 = 2 ** 32 - 1;

/** Accepts a packet as the inbound path would: check, (authenticate), update. */
function accept(w: ReplayWindow, seqLo: number): number {
  const hi = w.check(seqLo);
  if (hi >= 0) expect(w.update(hi, seqLo)).toBe(true);
  return hi;
}

function windowAt(esn: boolean, hi: number, lo: number): ReplayWindow {
  const w = new ReplayWindow(esn, W);
  expect(w.update(hi, lo)).toBe(true);
  return w;
}

describe('anti-replay window (RFC 4303 §3.4.3, Appendix A2.2)', () => {
  // [description, esn, (top hi, top lo), received low half, expected check() result]
  const cases: Array<[string, boolean, [number, number] | null, number, number]> = [
    ['fresh window accepts 1', true, null, 1, 0],
    ['fresh window refuses 0 (never sent)', true, null, 0, REPLAY_TOO_OLD],
    ['fresh window, low half near 2^32 would need high -1', true, null, TOP32, REPLAY_TOO_OLD],
    ['new packet ahead of the top', true, [0, 5000], 5001, 0],
    ['inside the window, unseen', true, [0, 5000], 5000 - W + 1, 0],
    ['the top itself is a duplicate', true, [0, 5000], 5000, REPLAY_DUPLICATE],
    // With ESN, Appendix A2.2 reads a number left of the window as the next 2^32
    // subspace: the ICV then fails (the AAD carries the wrong high half).
    ['ESN: just left of the window reads as the next subspace', true, [0, 5000], 5000 - W, 1],
    ['no ESN: just left of the window is too old', false, [0, 5000], 5000 - W, REPLAY_TOO_OLD],
    ['case A: low half wrapped, infer high + 1', true, [0, TOP32 - 10], 5, 1],
    ['case A: inside the window below the wrap', true, [0, TOP32 - 10], TOP32 - 20, 0],
    ['case B: window spans the wrap, old subspace', true, [1, 5], TOP32 - 100, 0],
    ['case B: far below the window reads as the next subspace', true, [1, 5], TOP32 - 5000, 1],
    ['case B: unseen packet in the current subspace', true, [1, 5], 3, 1],
    ['high half at 2^32 - 1 stays exact', true, [TOP32, 100], 101, TOP32],
    ['no ESN: the low half is the whole number', false, [0, TOP32 - 1], TOP32, 0],
    ['no ESN: never infers a wrap', false, [0, TOP32 - 1], 5, REPLAY_TOO_OLD],
  ];
  for (const [what, esn, top, seqLo, expected] of cases) {
    it(what, () => {
      const w = top ? windowAt(esn, top[0], top[1]) : new ReplayWindow(esn, W);
      expect(w.check(seqLo)).toBe(expected);
      expect(w.check(seqLo)).toBe(expected); // check() never moves the window
    });
  }

  for (const esn of [true, false]) {
    it(`accepts every packet of an in-order stream once, then refuses each replay (ESN ${esn})`, () => {
      const w = new ReplayWindow(esn, W);
      for (let s = 1; s <= 10_000; s++) expect(accept(w, s)).toBe(0);
      for (let s = 10_000 - W + 1; s <= 10_000; s++) expect(w.check(s)).toBe(REPLAY_DUPLICATE);
      // Older than the window: too old without ESN; with ESN "next subspace", left to the ICV.
      for (const s of [1, 10_000 - W]) expect(w.check(s)).toBe(esn ? 1 : REPLAY_TOO_OLD);
    });
  }

  it('accepts reordering inside the window exactly once', () => {
    const w = new ReplayWindow(true, W);
    const order = Array.from({ length: 3000 }, (_, i) => i + 1).reverse();
    for (const s of order) expect(accept(w, s)).toBe(0);
    for (const s of order) expect(w.check(s)).toBe(REPLAY_DUPLICATE);
  });

  it('a jump past the window forgets old slots without marking new ones', () => {
    const w = windowAt(false, 0, 10);
    expect(accept(w, 10 + 3 * W)).toBe(0);
    expect(w.check(10 + 2 * W + 1)).toBe(0); // in window, unseen
    expect(w.check(10)).toBe(REPLAY_TOO_OLD);
  });

  it('update() refuses a second copy that passed check() in the same batch', () => {
    const w = new ReplayWindow(true, W);
    const hi1 = w.check(7);
    const hi2 = w.check(7);
    expect(w.update(hi1, 7)).toBe(true);
    expect(w.update(hi2, 7)).toBe(false);
  });

  it('crosses the 2^32 boundary of a 64-bit sequence without loss', () => {
    const w = windowAt(true, 0, TOP32 - 50);
    for (let i = 1; i <= 100; i++) {
      const seq = TOP32 - 50 + i;
      expect(accept(w, seq >>> 0)).toBe(Math.floor(seq / 2 ** 32));
    }
    expect(w.top).toBe(TOP32 + 50);
  });

  it('is at least 1024 packets wide and a power of two', () => {
    expect(() => new ReplayWindow(true, 512)).toThrow(RangeError);
    expect(() => new ReplayWindow(true, 3000)).toThrow(RangeError);
    expect(new ReplayWindow(true).size).toBeGreaterThanOrEqual(1024);
  });
});
