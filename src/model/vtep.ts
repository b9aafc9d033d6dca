/*
 * Where an encrypted network's frames meet the gateway (docs/plumbing.md "The TAP port"):
 *   tap     a TAP port on the network's bridge: the native data path reads and writes whole frames,
 *           finds each destination MAC's peer itself and frames VXLAN in user space (the default)
 *   kernel  a kernel VXLAN device on the bridge, which sends each peer's VXLAN to the gateway's UDP
 *           socket and takes it back from there (docs/plumbing.md "Gateway addresses"); the fallback
 *           where no TAP port can be made, and the TypeScript data path's only way
 */
export const VTEP_KINDS = ['tap', 'kernel'] as const;
export type VtepKind = (typeof VTEP_KINDS)[number];
export const DEFAULT_VTEP: VtepKind = 'tap';

export function isVtepKind(text: string): text is VtepKind {
  return (VTEP_KINDS as readonly string[]).includes(text);
}
