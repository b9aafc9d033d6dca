import { readU32, writeU32 } from '../../crypto/bytes.js';
import { isVni, VNI_MAX } from '../../model/ids.js';
import { VXLAN_FLAG_I, VXLAN_FLAGS_OFFSET, VXLAN_HEADER_LENGTH, VXLAN_VNI_OFFSET } from './constants.js';
import type { Dropped } from './drops.js';

/*
 * VXLAN header, RFC 7348 §5:
 *
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |R|R|R|R|I|R|R|R|            Reserved                           |
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |                VXLAN Network Identifier (VNI) |   Reserved    |
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Reserved bits are sent as zero and ignored on receipt (§5).
 */

/** Writes the header at `offset` of `out`. */
export function encodeVxlanHeaderInto(out: Uint8Array, offset: number, vni: number): void {
  out.fill(0, offset, offset + VXLAN_HEADER_LENGTH);
  out[offset + VXLAN_FLAGS_OFFSET] = VXLAN_FLAG_I;
  writeU32(out, offset + VXLAN_VNI_OFFSET, (vni << 8) >>> 0);
}

export function encodeVxlanHeader(vni: number): Uint8Array {
  if (!isVni(vni)) throw new RangeError(`VNI ${vni} is outside 0..${VNI_MAX}`);
  const out = new Uint8Array(VXLAN_HEADER_LENGTH);
  encodeVxlanHeaderInto(out, 0, vni);
  return out;
}

export type ParsedVxlan = { ok: true; vni: number } | Dropped;

export function parseVxlanHeader(buf: Uint8Array, offset = 0): ParsedVxlan {
  if (buf.length - offset < VXLAN_HEADER_LENGTH) return { ok: false, drop: 'bad-vxlan-header' };
  if ((buf[offset + VXLAN_FLAGS_OFFSET]! & VXLAN_FLAG_I) === 0) return { ok: false, drop: 'bad-vxlan-header' };
  return { ok: true, vni: readU32(buf, offset + VXLAN_VNI_OFFSET) >>> 8 };
}
