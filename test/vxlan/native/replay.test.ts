// The data plane's replay window (native/replay.c) against replay.ts on random sequences: the same
// check() and update() decisions, step by step, with and without ESN, across the 2^32 boundary.
import { describe, expect, it } from 'vitest';
import { NativeReplayWindow } from '../../../src/vxlan/native/addon.js';
import { ReplayWindow } from '../../../src/vxlan/sa/replay.js';
import { Prng } from '../../support/prng.js';

const STEPS = 200_000;

/** A sender's sequence around `base`, delivered with reordering, duplicates, stale and far-future packets. */
function* arrivals(rng: Prng, base: number, steps: number, farJump: number): Generator<number> {
  let next = base;
  const recent: number[] = [];
  for (let i = 0; i < steps; i++) {
    const r = rng.int(100);
    let seq: number;
    if (r < 55) seq = next++;
    else if (r < 70 && recent.length)
      seq = rng.pick(recent); // duplicate
    else if (r < 80)
      seq = Math.max(0, next - 1 - rng.int(5000)); // reordered, some beyond the window
    else if (r < 85)
      seq = Math.max(0, next - rng.int(2 ** 33)); // very old
    else if (r < 92)
      seq = next += 1 + rng.int(3000); // a gap
    else if (r < 94)
      seq = next += rng.int(farJump); // a jump far ahead
    else seq = farJump > 2 ** 16 ? rng.u32() : rng.int(next + 5000); // noise: any low half (32-bit: not past the end)
    recent.push(seq);
    if (recent.length > 64) recent.shift();
    yield seq;
  }
}

for (const esn of [true, false]) {
  for (const [label, base] of [
    ['from 1', 1],
    ['across 2^32', 2 ** 32 - 50_000],
  ] as const) {
    if (!esn && base > 1) continue;
    describe(`replay window ${esn ? 'ESN' : '32-bit'} ${label}`, () => {
      it(`${STEPS} random arrivals: native and TypeScript decide alike`, () => {
        const seed = 1000 + (esn ? 1 : 0) + base;
        const rng = new Prng(seed);
        const ts = new ReplayWindow(esn);
        const native = new NativeReplayWindow(esn);
        let accepted = 0;
        let step = 0;
        for (const seq of arrivals(rng, base, STEPS, esn ? 2 ** 31 : 2 ** 16)) {
          const lo = seq >>> 0;
          const a = ts.check(lo);
          const b = native.check(lo);
          if (a !== b) expect.fail(`seed ${seed} step ${step}: check(${lo}) ts=${a} native=${b}`);
          // update() only for packets the check let through and that "authenticated"; sometimes twice (a batch duplicate).
          if (a >= 0) {
            const u1 = ts.update(a, lo);
            const u2 = native.update(a, lo);
            if (u1 !== u2) expect.fail(`seed ${seed} step ${step}: update(${a}, ${lo}) ts=${u1} native=${u2}`);
            if (u1) accepted++;
            if (rng.int(10) === 0 && ts.update(a, lo) !== native.update(a, lo))
              expect.fail(`step ${step}: repeated update differs`);
          }
          step++;
        }
        // Not a degenerate run: many packets were new, many were refused.
        expect(accepted).toBeGreaterThan(STEPS / 20);
        expect(accepted).toBeLessThan(STEPS);
      });
    });
  }
}

it('update() of arbitrary (hi, lo) pairs, including ones check() would refuse, agrees too', () => {
  const rng = new Prng(77);
  const ts = new ReplayWindow(true);
  const native = new NativeReplayWindow(true);
  for (let i = 0; i < 50_000; i++) {
    const hi = rng.int(4);
    const lo = rng.int(8) === 0 ? rng.u32() : (i * 7) >>> 0;
    expect(native.update(hi, lo)).toBe(ts.update(hi, lo));
    const probe = rng.u32();
    expect(native.check(probe)).toBe(ts.check(probe));
  }
});

it('rejects window sizes replay.ts rejects', () => {
  expect(() => new NativeReplayWindow(true, 1000)).toThrow();
  expect(() => new NativeReplayWindow(true, 512)).toThrow();
  expect(new NativeReplayWindow(true, 1024).size).toBe(1024);
});
