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

/** Ethernet | IPv4 (DF) | UDP (checksum 0, RFC 768) from port 40000 to `port` | payload `text`. */
export function udpFrame(src: FrameEnd, dst: FrameEnd, port: number, text: string): Uint8Array {
  const payload = new TextEncoder().encode(text);
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
