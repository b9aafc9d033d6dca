import { randomInt } from 'node:crypto';

/**
 * Datagrams per fuzz run: 100,000 by default (the unit tier stays fast), 1,000,000 in CI
 * (.ci/run sets VEIL_FUZZ_DATAGRAMS). VEIL_FUZZ_SEED reruns a printed seed (docs/testing.md "Fuzzing").
 */
export const FUZZ_DATAGRAMS = Number(process.env.VEIL_FUZZ_DATAGRAMS ?? 100_000);
export const FUZZ_SEED = Number(process.env.VEIL_FUZZ_SEED ?? randomInt(2 ** 31));
