/*
 * Rotation on a packet budget (docs/keys.md "Sequence budget"): rotate before a key's
 * sequence number nears its limit. Docker's SAs have 32-bit sequence
 * numbers and run out inside the 12-hour window above ~100 k packets/s per pair
 * (moby/moby#45635, cilium/cilium#22747). veil's SAs use ESN, each outbound SA is
 * capped at a budget far below 2^64, and once an SA has used half of it the gateway
 * asks for a rotation, so the next epoch is active long before the SA would stop
 * (drop reason `seq-exhausted`: fail closed, never a wrapped nonce).
 */

/** Packets one outbound SA may seal (2^48: 8.9 years at 1 M packets/s). */
export const DEFAULT_SEQUENCE_BUDGET = 2 ** 48;
/** Ask for a rotation once this share of the budget is used. */
export const ROTATE_AT_BUDGET_SHARE = 0.5;

export interface OutboundUse {
  readonly vni: number;
  readonly peer: string;
  readonly outbound?: { readonly epoch: number; readonly sealed: number };
}

/**
 * The (vni, epoch) pairs whose outbound SA toward some peer used at least half the budget
 * and for which no rotation was asked yet (`asked` holds "vni/epoch").
 */
export function rotationsDue(
  pairs: readonly OutboundUse[],
  budget: number,
  asked: ReadonlySet<string>,
): Array<{ vni: number; epoch: number; peer: string; sealed: number }> {
  const due = new Map<string, { vni: number; epoch: number; peer: string; sealed: number }>();
  for (const p of pairs) {
    if (!p.outbound || p.outbound.sealed < budget * ROTATE_AT_BUDGET_SHARE) continue;
    const key = `${p.vni}/${p.outbound.epoch}`;
    if (!asked.has(key) && !due.has(key))
      due.set(key, { vni: p.vni, epoch: p.outbound.epoch, peer: p.peer, sealed: p.outbound.sealed });
  }
  return [...due.values()];
}
