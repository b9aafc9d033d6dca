/**
 * Why the data plane dropped a datagram. The hot path never throws: every
 * step returns one of these, and the caller counts it.
 */
export const DROP_REASONS = [
  // inbound (underlay → VTEP), in processing order
  'nat-keepalive', // RFC 3948 §2.3: not an error, but not for the VTEP either
  'non-esp-marker', // RFC 3948 §2.2: IKE; veil runs no IKE
  'truncated', // shorter than the smallest well-formed ESP datagram
  'unknown-spi',
  'replay-too-old', // left of the anti-replay window
  'replay-duplicate',
  'auth-failed', // ICV did not verify
  'bad-alignment', // ciphertext not a multiple of 4 (RFC 4303 §2.4)
  'bad-pad-length',
  'bad-padding', // padding bytes not 1, 2, 3, ... (RFC 4303 §2.4)
  'bad-next-header', // not UDP (17)
  'bad-inner-udp', // inner UDP header malformed or not to port 4789
  'bad-vxlan-header', // RFC 7348 §5: I flag clear or too short
  'vni-mismatch', // authentic, but for another network: isolation
  'plaintext-on-encrypted', // plain VXLAN claiming an encrypted network's VNI: a downgrade
  // outbound (VTEP → underlay)
  'unknown-vni',
  'unknown-peer',
  'no-outbound-sa', // encrypted network without a usable SA: fail closed
  'seq-exhausted', // the SA's sequence budget is spent; never wrap
  'oversize',
  'send-failed',
  'unauthorized-source', // a VTEP-side datagram not from the local VTEP
  'bad-frame', // a TAP port's read the kernel framed wrongly (docs/plumbing.md "The TAP port")
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

export const DROP_INDEX: Readonly<Record<DropReason, number>> = Object.fromEntries(
  DROP_REASONS.map((reason, i) => [reason, i]),
) as Record<DropReason, number>;

export type Dropped = { ok: false; drop: DropReason };

/** Per-reason drop counters backed by a typed array: counting costs one increment. */
export class DropCounters {
  readonly #counts = new Float64Array(DROP_REASONS.length);

  count(reason: DropReason, n = 1): void {
    this.#counts[DROP_INDEX[reason]]! += n;
  }

  get(reason: DropReason): number {
    return this.#counts[DROP_INDEX[reason]]!;
  }

  total(): number {
    let sum = 0;
    for (const n of this.#counts) sum += n;
    return sum;
  }

  /** Non-zero counters only, by reason. */
  snapshot(): Partial<Record<DropReason, number>> {
    const out: Partial<Record<DropReason, number>> = {};
    DROP_REASONS.forEach((reason, i) => {
      if (this.#counts[i]) out[reason] = this.#counts[i]!;
    });
    return out;
  }
}
