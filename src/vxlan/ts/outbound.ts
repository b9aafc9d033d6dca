import { IPPROTO_UDP, UDP_HEADER_LENGTH, VXLAN_PORT } from '../wire/constants.js';
import type { Dropped } from '../wire/drops.js';
import type { OutboundSa } from '../sa/sa.js';
import { encodeUdpHeaderInto } from '../wire/udp.js';
import { parseVxlanHeader } from '../wire/vxlan.js';

export type OutboundResult = { ok: true; datagram: Uint8Array } | Dropped;

/**
 * Outbound: a VXLAN datagram from the local VTEP → the UDP/4500 payload for the
 * peer. The VTEP's datagram is protected as it would be by kernel IPsec in
 * transport mode on UDP/4789: inner UDP header (the VTEP's source port kept as
 * flow entropy) + VXLAN, next header 17. The SA must be the one of the
 * datagram's network; a datagram of another VNI is never sealed under it.
 */
export function sealOutbound(vxlan: Uint8Array, srcPort: number, sa: OutboundSa | undefined): OutboundResult {
  const parsed = parseVxlanHeader(vxlan);
  if (!parsed.ok) return parsed;
  // Fail closed: no SA, no packet (CVE-2023-28841 sent plaintext instead).
  if (!sa) return { ok: false, drop: 'no-outbound-sa' };
  if (parsed.vni !== sa.vni) return { ok: false, drop: 'vni-mismatch' };
  const payload = new Uint8Array(UDP_HEADER_LENGTH + vxlan.length);
  encodeUdpHeaderInto(payload, 0, srcPort, VXLAN_PORT, vxlan.length);
  payload.set(vxlan, UDP_HEADER_LENGTH);
  return sa.seal(payload, IPPROTO_UDP);
}
