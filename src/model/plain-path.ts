/*
 * How a plain network's VXLAN reaches the underlay (docs/plumbing.md "Plain networks"):
 *   kernel   its VXLAN device sends and receives on the underlay itself, as Docker's overlay does;
 *            the gateway only keeps its FDB and the underlay firewall (the default)
 *   gateway  its frames pass through the gateway's data path like an encrypted network's, sent on
 *            as plain VXLAN (per-peer counters; the in-process test harness carries plain networks so)
 */
export const PLAIN_PATHS = ['kernel', 'gateway'] as const;
export type PlainPath = (typeof PLAIN_PATHS)[number];
export const DEFAULT_PLAIN_PATH: PlainPath = 'kernel';

export function isPlainPath(text: string): text is PlainPath {
  return (PLAIN_PATHS as readonly string[]).includes(text);
}
