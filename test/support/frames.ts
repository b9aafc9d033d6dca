// Ethernet frames built by hand for tests that forge traffic (isolation, injection).

const IPPROTO_UDP = 17;

export interface FrameEnd {
  readonly mac: string;
  readonly ip: string;
}

const macBytes = (mac: string) => Uint8Array.from(mac.split(':').map((h) => parseInt(h, 16)));
const ipBytes = (ip: string) => Uint8Array.from(ip.split('.').map(Number));

function ipv4Checksum(header: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < header.length; i += 2) sum += (header[i]! << 8) | header[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Ethernet | IPv4 (DF) | UDP (checksum 0, RFC 768) from port 40000 to `port` | payload (`text` as UTF-8). */
export function udpFrame(src: FrameEnd, dst: FrameEnd, port: number, text: string | Uint8Array): Uint8Array {
  const payload = typeof text === 'string' ? new TextEncoder().encode(text) : text;
  const udp = new Uint8Array(8 + payload.length);
  const dv = new DataView(udp.buffer);
  dv.setUint16(0, 40000);
  dv.setUint16(2, port);
  dv.setUint16(4, udp.length);
  udp.set(payload, 8);
  const ip = new Uint8Array(20);
  const iv = new DataView(ip.buffer);
  ip[0] = 0x45;
  iv.setUint16(2, 20 + udp.length);
  iv.setUint16(4, 0x1234);
  iv.setUint16(6, 0x4000); // DF
  ip[8] = 64;
  ip[9] = IPPROTO_UDP;
  ip.set(ipBytes(src.ip), 12);
  ip.set(ipBytes(dst.ip), 16);
  iv.setUint16(10, ipv4Checksum(ip));
  const frame = new Uint8Array(14 + 20 + udp.length);
  frame.set(macBytes(dst.mac), 0);
  frame.set(macBytes(src.mac), 6);
  frame[12] = 0x08;
  frame[13] = 0x00;
  frame.set(ip, 14);
  frame.set(udp, 34);
  return frame;
}

/** Ethernet header + payload: `etherType` as a number (0x0806 ARP, 0x86dd IPv6, 0x88cc LLDP). */
export function ethernetFrame(dstMac: string, srcMac: string, etherType: number, payload: Uint8Array): Uint8Array {
  // At least the 46-byte minimum payload (IEEE 802.3), zero-padded.
  const frame = new Uint8Array(14 + Math.max(payload.length, 46));
  frame.set(macBytes(dstMac), 0);
  frame.set(macBytes(srcMac), 6);
  new DataView(frame.buffer).setUint16(12, etherType);
  frame.set(payload, 14);
  return frame;
}

/**
 * ARP for Ethernet and IPv4 (RFC 826): `op` 1 request, 2 reply; sender and target hardware and
 * protocol addresses. The Ethernet source is `ethSrc` (the sender's MAC unless a test says otherwise).
 */
export function arpFrame(
  op: 1 | 2,
  sender: FrameEnd,
  target: FrameEnd,
  ethDst: string,
  ethSrc: string = sender.mac,
): Uint8Array {
  const arp = new Uint8Array(28);
  const dv = new DataView(arp.buffer);
  dv.setUint16(0, 1); // htype Ethernet
  dv.setUint16(2, 0x0800); // ptype IPv4
  arp[4] = 6;
  arp[5] = 4;
  dv.setUint16(6, op);
  arp.set(macBytes(sender.mac), 8);
  arp.set(ipBytes(sender.ip), 14);
  arp.set(macBytes(target.mac), 18);
  arp.set(ipBytes(target.ip), 24);
  return ethernetFrame(ethDst, ethSrc, 0x0806, arp);
}
