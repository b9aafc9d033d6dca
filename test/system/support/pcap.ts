// A tiny reader for classic libpcap files (what `tcpdump -w` writes): the global header, the
// records, and Ethernet → IPv4 → UDP, enough to get UDP payloads with their addresses and ports.
// Not pcapng. Both byte orders, microsecond (0xa1b2c3d4) and nanosecond (0xa1b23c4d) magic.
// A truncated last record (a file still being written) is ignored, not an error.

export const LINKTYPE_ETHERNET = 1;
const MAGIC_MICROS = 0xa1b2c3d4;
const MAGIC_NANOS = 0xa1b23c4d;
const GLOBAL_HEADER_LENGTH = 24;
const RECORD_HEADER_LENGTH = 16;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_VLAN = 0x8100;
const IPPROTO_UDP = 17;

export interface PcapHeader {
  littleEndian: boolean;
  /** true for the nanosecond magic: record timestamps' fraction is in ns. */
  nanoseconds: boolean;
  versionMajor: number;
  versionMinor: number;
  snaplen: number;
  linkType: number;
}

export interface PcapRecord {
  /** Seconds since the epoch, with the fraction (µs or ns resolution). */
  timestamp: number;
  /** The captured bytes (may be shorter than the frame: snaplen). */
  data: Uint8Array;
  originalLength: number;
}

export interface PcapFile {
  header: PcapHeader;
  records: PcapRecord[];
}

export interface Ipv4Packet {
  src: string;
  dst: string;
  protocol: number;
  /** Fragment offset in bytes and the more-fragments flag. */
  fragmentOffset: number;
  moreFragments: boolean;
  /** The IP payload (bounded by the total length field and by what was captured). */
  payload: Uint8Array;
}

export interface UdpDatagram {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
  /** Index of the record in the file. */
  record: number;
}

export class PcapError extends Error {
  override name = 'PcapError';
}

export function parsePcap(bytes: Uint8Array): PcapFile {
  if (bytes.length < GLOBAL_HEADER_LENGTH)
    throw new PcapError(`pcap too short for a global header: ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let littleEndian: boolean;
  let nanoseconds: boolean;
  const be = view.getUint32(0, false);
  const le = view.getUint32(0, true);
  if (be === MAGIC_MICROS || be === MAGIC_NANOS) {
    littleEndian = false;
    nanoseconds = be === MAGIC_NANOS;
  } else if (le === MAGIC_MICROS || le === MAGIC_NANOS) {
    littleEndian = true;
    nanoseconds = le === MAGIC_NANOS;
  } else {
    throw new PcapError(`not a pcap file (magic 0x${be.toString(16).padStart(8, '0')})`);
  }
  const header: PcapHeader = {
    littleEndian,
    nanoseconds,
    versionMajor: view.getUint16(4, littleEndian),
    versionMinor: view.getUint16(6, littleEndian),
    snaplen: view.getUint32(16, littleEndian),
    linkType: view.getUint32(20, littleEndian) & 0x0fffffff, // upper bits: FCS info (pcap-linktype(7))
  };
  const records: PcapRecord[] = [];
  const divisor = nanoseconds ? 1e9 : 1e6;
  let offset = GLOBAL_HEADER_LENGTH;
  while (offset + RECORD_HEADER_LENGTH <= bytes.length) {
    const seconds = view.getUint32(offset, littleEndian);
    const fraction = view.getUint32(offset + 4, littleEndian);
    const inclLength = view.getUint32(offset + 8, littleEndian);
    const originalLength = view.getUint32(offset + 12, littleEndian);
    const start = offset + RECORD_HEADER_LENGTH;
    if (start + inclLength > bytes.length) break; // truncated (still being written)
    records.push({
      timestamp: seconds + fraction / divisor,
      data: bytes.subarray(start, start + inclLength),
      originalLength,
    });
    offset = start + inclLength;
  }
  return { header, records };
}

const ipv4 = (b: Uint8Array, at: number): string => `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;

/** Ethernet (optionally one 802.1Q tag) → IPv4; undefined for anything else or a malformed header. */
export function ethernetIpv4(frame: Uint8Array): Ipv4Packet | undefined {
  if (frame.length < 14) return undefined;
  let typeAt = 12;
  let etherType = (frame[typeAt]! << 8) | frame[typeAt + 1]!;
  if (etherType === ETHERTYPE_VLAN) {
    typeAt += 4;
    if (frame.length < typeAt + 2) return undefined;
    etherType = (frame[typeAt]! << 8) | frame[typeAt + 1]!;
  }
  if (etherType !== ETHERTYPE_IPV4) return undefined;
  return parseIpv4(frame.subarray(typeAt + 2));
}

export function parseIpv4(packet: Uint8Array): Ipv4Packet | undefined {
  if (packet.length < 20) return undefined;
  const version = packet[0]! >> 4;
  const headerLength = (packet[0]! & 0x0f) * 4;
  if (version !== 4 || headerLength < 20 || packet.length < headerLength) return undefined;
  const totalLength = (packet[2]! << 8) | packet[3]!;
  if (totalLength < headerLength) return undefined;
  const flagsFragment = (packet[6]! << 8) | packet[7]!;
  return {
    src: ipv4(packet, 12),
    dst: ipv4(packet, 16),
    protocol: packet[9]!,
    fragmentOffset: (flagsFragment & 0x1fff) * 8,
    moreFragments: (flagsFragment & 0x2000) !== 0,
    payload: packet.subarray(headerLength, Math.min(totalLength, packet.length)),
  };
}

/**
 * The UDP datagrams of an Ethernet capture, in file order. Non-first fragments and anything
 * not IPv4/UDP are skipped; a payload is cut to what was captured (and to the UDP length).
 */
export function udpDatagrams(file: PcapFile): UdpDatagram[] {
  if (file.header.linkType !== LINKTYPE_ETHERNET)
    throw new PcapError(`link type ${file.header.linkType} is not Ethernet`);
  const out: UdpDatagram[] = [];
  file.records.forEach((record, index) => {
    const ip = ethernetIpv4(record.data);
    if (!ip || ip.protocol !== IPPROTO_UDP || ip.fragmentOffset !== 0 || ip.payload.length < 8) return;
    const u = ip.payload;
    const length = (u[4]! << 8) | u[5]!;
    out.push({
      src: ip.src,
      dst: ip.dst,
      srcPort: (u[0]! << 8) | u[1]!,
      dstPort: (u[2]! << 8) | u[3]!,
      payload: u.subarray(8, length >= 8 ? Math.min(length, u.length) : u.length),
      record: index,
    });
  });
  return out;
}

/** Every IPv4 packet of an Ethernet capture (non-IPv4 frames skipped). */
export function ipv4Packets(file: PcapFile): Ipv4Packet[] {
  if (file.header.linkType !== LINKTYPE_ETHERNET)
    throw new PcapError(`link type ${file.header.linkType} is not Ethernet`);
  return file.records.map((r) => ethernetIpv4(r.data)).filter((p): p is Ipv4Packet => p !== undefined);
}
