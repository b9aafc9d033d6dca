import { readU16, readU32, writeU16 } from '../../crypto/bytes.js';
import {
  NAT_KEEPALIVE_BYTE,
  NON_ESP_MARKER_LENGTH,
  UDP_CHECKSUM_OFFSET,
  UDP_DST_PORT_OFFSET,
  UDP_HEADER_LENGTH,
  UDP_LENGTH_OFFSET,
  UDP_SRC_PORT_OFFSET,
} from './constants.js';
import type { Dropped } from './drops.js';

/*
 * UDP header, RFC 768:
 *
 *   0      7 8     15 16    23 24    31
 *  +--------+--------+--------+--------+
 *  |   Source Port   | Destination Port|
 *  +--------+--------+--------+--------+
 *  |     Length      |    Checksum     |
 *  +--------+--------+--------+--------+
 *
 * veil writes this header in two places: inside ESP, in front of the VXLAN
 * datagram it protects (transport mode over UDP/4789), and in tests that build
 * whole RFC 3948 packets. The kernel writes the outer UDP/4500 header.
 */

export interface UdpHeader {
  srcPort: number;
  dstPort: number;
  /** Header plus payload, in bytes. */
  length: number;
  checksum: number;
}

/**
 * Checksum 0: RFC 768 allows it over IPv4, RFC 7348 §5 recommends it for VXLAN,
 * and RFC 3948 §2.1 for the UDP/4500 header. Inside ESP the ICV already covers
 * every byte, and a transport-mode checksum would be wrong after NAT anyway (RFC 3948 §3.1.2).
 */
export function encodeUdpHeaderInto(
  out: Uint8Array,
  offset: number,
  srcPort: number,
  dstPort: number,
  payloadLength: number,
): void {
  writeU16(out, offset + UDP_SRC_PORT_OFFSET, srcPort);
  writeU16(out, offset + UDP_DST_PORT_OFFSET, dstPort);
  writeU16(out, offset + UDP_LENGTH_OFFSET, UDP_HEADER_LENGTH + payloadLength);
  writeU16(out, offset + UDP_CHECKSUM_OFFSET, 0);
}

export function encodeUdpHeader(srcPort: number, dstPort: number, payloadLength: number): Uint8Array {
  if (UDP_HEADER_LENGTH + payloadLength > 0xffff) throw new RangeError('UDP datagram longer than 65535 bytes');
  const out = new Uint8Array(UDP_HEADER_LENGTH);
  encodeUdpHeaderInto(out, 0, srcPort, dstPort, payloadLength);
  return out;
}

export type ParsedUdp = { ok: true; header: UdpHeader } | Dropped;

/** Parses a UDP header whose length field must match the bytes that follow exactly. */
export function parseUdpHeader(buf: Uint8Array, offset = 0): ParsedUdp {
  if (buf.length - offset < UDP_HEADER_LENGTH) return { ok: false, drop: 'bad-inner-udp' };
  const length = readU16(buf, offset + UDP_LENGTH_OFFSET);
  if (length !== buf.length - offset) return { ok: false, drop: 'bad-inner-udp' };
  return {
    ok: true,
    header: {
      srcPort: readU16(buf, offset + UDP_SRC_PORT_OFFSET),
      dstPort: readU16(buf, offset + UDP_DST_PORT_OFFSET),
      length,
      checksum: readU16(buf, offset + UDP_CHECKSUM_OFFSET),
    },
  };
}

export type Udp4500Kind = 'esp' | 'nat-keepalive' | 'non-esp-marker';

/** RFC 3948 §2: what a datagram received on UDP 4500 carries. */
export function classifyUdp4500Payload(payload: Uint8Array): Udp4500Kind {
  if (payload.length === 1 && payload[0] === NAT_KEEPALIVE_BYTE) return 'nat-keepalive';
  if (payload.length >= NON_ESP_MARKER_LENGTH && readU32(payload, 0) === 0) return 'non-esp-marker';
  return 'esp';
}
