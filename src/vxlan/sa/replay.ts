/*
 * Anti-replay window, RFC 4303 §3.4.3, with the extended-sequence-number
 * inference of RFC 4303 Appendix A2.2. Only the low 32 bits of the sequence
 * travel on the wire; the receiver infers the high half from its window.
 *
 * Use in this order (RFC 4303 §3.4.3): check() before decrypting, so replays cost
 * no AES; update() only after the ICV verified, so a forged packet never moves
 * the window. update() re-checks, so two copies that both passed check() in one
 * batch are still delivered once.
 *
 * Sequence numbers are kept as (high, low) 32-bit halves, so every ESN value up
 * to 2^64 - 1 is exact in JavaScript numbers.
 */

export const REPLAY_WINDOW_DEFAULT = 4096;
/** RFC 4303 §3.4.3 recommends at least 32 packets, and 64; veil keeps a window of at least 1024 for reordering at speed. */
export const REPLAY_WINDOW_MIN = 1024;

/** check() results below zero. */
export const REPLAY_TOO_OLD = -1;
export const REPLAY_DUPLICATE = -2;

const TWO_POW_32 = 2 ** 32;

export class ReplayWindow {
  readonly size: number;
  readonly esn: boolean;
  readonly #bits: Uint32Array;
  readonly #mask: number;
  // highest authenticated sequence number; 0 = nothing received yet
  #topHi = 0;
  #topLo = 0;

  constructor(esn: boolean, size = REPLAY_WINDOW_DEFAULT) {
    if (!Number.isInteger(size) || size < REPLAY_WINDOW_MIN || size > 2 ** 24 || (size & (size - 1)) !== 0) {
      throw new RangeError(`replay window must be a power of two from ${REPLAY_WINDOW_MIN} to 2^24`);
    }
    this.size = size;
    this.esn = esn;
    this.#bits = new Uint32Array(size / 32);
    this.#mask = size - 1;
  }

  /** Highest authenticated sequence number (exact below 2^53). */
  get top(): number {
    return this.#topHi * TWO_POW_32 + this.#topLo;
  }

  /**
   * Infers the high 32 bits for `seqLo` and tells whether the packet may be
   * new. Returns the high half (>= 0), REPLAY_TOO_OLD or REPLAY_DUPLICATE.
   */
  check(seqLo: number): number {
    const th = this.#topHi;
    const tl = this.#topLo;
    const w = this.size;
    let seqHi = 0;
    if (this.esn) {
      if (tl >= w - 1) {
        // Case A: the window lies within one 2^32 subspace.
        seqHi = seqLo >= tl - w + 1 ? th : th + 1;
      } else {
        // Case B: the window spans two subspaces.
        seqHi = seqLo >= (tl - w + 1) >>> 0 ? th - 1 : th;
      }
      if (seqHi < 0 || seqHi >= TWO_POW_32) return REPLAY_TOO_OLD;
    }
    if (seqHi > th || (seqHi === th && seqLo > tl)) return seqHi;
    // At or below the top: seqHi is th or th - 1, so the distance is exact.
    const distance = (th - seqHi) * TWO_POW_32 + (tl - seqLo);
    if (distance >= w || (seqHi === 0 && seqLo === 0)) return REPLAY_TOO_OLD;
    return this.#isSet(seqLo) ? REPLAY_DUPLICATE : seqHi;
  }

  /** Records an authenticated packet. Returns false if it was already recorded (a duplicate). */
  update(seqHi: number, seqLo: number): boolean {
    const th = this.#topHi;
    const tl = this.#topLo;
    if (seqHi > th || (seqHi === th && seqLo > tl)) {
      const shift = (seqHi - th) * TWO_POW_32 + (seqLo - tl);
      if (shift >= this.size) {
        this.#bits.fill(0);
      } else {
        // Forget the slots the window slides over: they now stand for new numbers.
        for (let k = 1; k <= shift; k++) this.#clear((tl + k) >>> 0);
      }
      this.#topHi = seqHi;
      this.#topLo = seqLo;
      this.#set(seqLo);
      return true;
    }
    const distance = (th - seqHi) * TWO_POW_32 + (tl - seqLo);
    if (distance >= this.size || this.#isSet(seqLo)) return false;
    this.#set(seqLo);
    return true;
  }

  // The slot of a sequence number is its value modulo the window size; since the
  // size divides 2^32, the low half alone determines it.
  #isSet(seqLo: number): boolean {
    const slot = seqLo & this.#mask;
    return (this.#bits[slot >>> 5]! & (1 << (slot & 31))) !== 0;
  }

  #set(seqLo: number): void {
    const slot = seqLo & this.#mask;
    this.#bits[slot >>> 5]! |= 1 << (slot & 31);
  }

  #clear(seqLo: number): void {
    const slot = seqLo & this.#mask;
    this.#bits[slot >>> 5]! &= ~(1 << (slot & 31));
  }
}
