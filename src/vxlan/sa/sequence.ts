import { ESP_FIRST_SEQ, ESP_SEQ32_MAX, ESP_SEQ64_MAX } from '../wire/constants.js';

/** Returned by SequenceCounter.next() when the budget is spent: 0 is never a valid ESP sequence number. */
export const SEQ_EXHAUSTED = 0;

/**
 * The sender's sequence counter (RFC 4303 §3.3.3). It starts at 1 and refuses
 * to wrap: past its limit every call returns SEQ_EXHAUSTED, and the SA must be
 * replaced. The limit is the smaller of the protocol's (2^32 - 1 without ESN,
 * 2^53 - 1 with it, see ESP_SEQ64_MAX) and a configured packet budget.
 */
export class SequenceCounter {
  readonly limit: number;
  #next = ESP_FIRST_SEQ;

  constructor(esn: boolean, budget?: number) {
    const protocolLimit = esn ? ESP_SEQ64_MAX : ESP_SEQ32_MAX;
    if (budget !== undefined && (!Number.isSafeInteger(budget) || budget < 1))
      throw new RangeError('sequence budget must be a positive integer');
    this.limit = Math.min(protocolLimit, budget ?? protocolLimit);
  }

  /** The next sequence number, or SEQ_EXHAUSTED. */
  next(): number {
    if (this.#next > this.limit) return SEQ_EXHAUSTED;
    return this.#next++;
  }

  /** Sequence numbers handed out so far. */
  get used(): number {
    return this.#next - ESP_FIRST_SEQ;
  }

  /** Sequence numbers left before the SA is exhausted (the "headroom"). */
  get remaining(): number {
    return Math.max(0, this.limit - this.#next + 1);
  }
}

/** Splits a sequence number below 2^53 into the two 32-bit halves ESP uses. */
export function seqHigh(seq: number): number {
  return Math.floor(seq / 2 ** 32);
}

export function seqLow(seq: number): number {
  return seq >>> 0;
}
