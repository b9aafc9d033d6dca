import { describe, expect, it } from 'vitest';
import { DEFAULT_SEQUENCE_BUDGET, rotationsDue } from '../../src/keyrotation/budget.js';

describe('rotation on a packet budget', () => {
  const pair = (vni: number, peer: string, epoch: number, sealed: number) => ({
    vni,
    peer,
    outbound: { epoch, sealed },
  });

  it("asks once per (network, epoch) when any peer's SA has used half the budget", () => {
    const pairs = [
      pair(4096, 'h2', 3, 499),
      pair(4096, 'h3', 3, 500),
      pair(4096, 'h4', 3, 900),
      pair(4097, 'h2', 1, 10),
      { vni: 4098, peer: 'h2' },
    ];
    expect(rotationsDue(pairs, 1000, new Set())).toEqual([{ vni: 4096, epoch: 3, peer: 'h3', sealed: 500 }]);
    expect(rotationsDue(pairs, 1000, new Set(['4096/3']))).toEqual([]);
    expect(rotationsDue([pair(4096, 'h3', 4, 600)], 1000, new Set(['4096/3']))).toEqual([
      { vni: 4096, epoch: 4, peer: 'h3', sealed: 600 },
    ]);
  });

  it('the default budget is far below 2^64 and exact in a double', () => {
    expect(DEFAULT_SEQUENCE_BUDGET).toBeLessThan(2 ** 53);
    expect(rotationsDue([pair(1, 'h', 1, 2 ** 47 - 1)], DEFAULT_SEQUENCE_BUDGET, new Set())).toEqual([]);
    expect(rotationsDue([pair(1, 'h', 1, 2 ** 47)], DEFAULT_SEQUENCE_BUDGET, new Set())).toHaveLength(1);
  });
});
