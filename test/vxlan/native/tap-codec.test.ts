// The TAP port's codec (native/tap.c, docs/plumbing.md "The TAP port"): what the outbound thread makes
// of one TAP read before sealing. A TCP super-segment (TSO) becomes segments the way the kernel's own
// segmentation makes them, each checked here against checksums computed independently in TypeScript
// (RFC 1071, RFC 791, RFC 9293 §3.1); a checksum left to be completed is completed; and reads the
// kernel would never hand over (random bytes, offload metadata that does not fit) are bad-frame, never
// a crash or a read past the frame.
import { describe, expect, it } from 'vitest';
import { loadNative } from '../../../src/vxlan/native/addon.js';
import { ETHERNET_HEADER_LENGTH as ETH, IPV4_HEADER_LENGTH as IP } from '../../../src/vxlan/wire/constants.js';
import { Prng } from '../../support/prng.js';

const addon = loadNative();
const VNET = 10;
const FIN = 0x01;
const PSH = 0x08;
const ACK = 0x10;
const CWR = 0x80;

/** RFC 1071: the one's complement sum of 16-bit words, folded. */
function sum16(data: Uint8Array, initial = 0): number {
  let s = initial;
  for (let i = 0; i + 1 < data.length; i += 2) s += (data[i]! << 8) | data[i + 1]!;
  if (data.length % 2) s += data[data.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** The TCP or UDP pseudo-header's sum (RFC 9293 §3.1, RFC 768). */
function pseudo(ip: Uint8Array, protocol: number, length: number): number {
  return sum16(Uint8Array.of(...ip.subarray(12, 20), 0, protocol, length >> 8, length & 0xff));
}

const u16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;
const u32 = (b: Uint8Array, o: number) => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;

function vnetHeader(h: { flags: number; gso: number; hdrLen: number; gsoSize: number; start: number; offset: number }) {
  const v = new Uint8Array(VNET);
  const view = new DataView(v.buffer);
  v[0] = h.flags;
  v[1] = h.gso;
  view.setUint16(2, h.hdrLen, true); // the host's order (x86: little-endian), as the TAP's legacy header
  view.setUint16(4, h.gsoSize, true);
  view.setUint16(6, h.start, true);
  view.setUint16(8, h.offset, true);
  return v;
}

/** An Ethernet + IPv4 + TCP super-segment as a container's TCP hands it to the TAP with TSO. */
function superSegment(
  prng: Prng,
  o: { payload: number; gsoSize: number; flags: number; options: number; ecn?: boolean },
) {
  const thl = 20 + o.options;
  const frame = new Uint8Array(ETH + IP + thl + o.payload);
  frame.set(prng.bytes(12)); // MACs
  frame[12] = 0x08; // IPv4
  const ip = frame.subarray(ETH);
  ip[0] = 0x45;
  ip[2] = (IP + thl + o.payload) >> 8; // the kernel's total length (GSO packets may claim any)
  ip[3] = (IP + thl + o.payload) & 0xff;
  ip.set(prng.bytes(2), 4); // identifier
  ip[6] = 0x40; // DF
  ip[8] = 64;
  ip[9] = 6;
  ip.set(Uint8Array.of(10, 1, 0, 5, 10, 1, 0, 9), 12);
  const tcp = frame.subarray(ETH + IP);
  tcp.set(prng.bytes(12)); // ports, sequence, acknowledgment
  tcp[12] = (thl / 4) << 4;
  tcp[13] = o.flags;
  tcp[14] = 0x01; // window
  for (let i = 20; i < thl; i++) tcp[i] = i === 20 ? 1 : prng.int(256); // NOP, then option bytes
  frame.set(prng.bytes(o.payload), ETH + IP + thl);
  // NEEDS_CSUM: the field holds the pseudo-header's sum over the whole TCP length, not complemented.
  const partial = pseudo(ip, 6, thl + o.payload);
  tcp[16] = partial >> 8;
  tcp[17] = partial & 0xff;
  const head = vnetHeader({
    flags: 1,
    gso: o.ecn ? 0x81 : 1,
    hdrLen: ETH + IP + thl,
    gsoSize: o.gsoSize,
    start: ETH + IP,
    offset: 16,
  });
  return { read: Uint8Array.of(...head, ...frame), frame, thl };
}

function segments(read: Uint8Array): Buffer[] {
  const r = addon.tapSegment(read);
  if (typeof r === 'string') throw new Error(`dropped: ${r}`);
  return r;
}

describe('a TCP super-segment', () => {
  it('becomes the segments the kernel would make: lengths, identifiers, sequence numbers, flags, checksums', () => {
    const prng = new Prng(4120);
    for (let round = 0; round < 300; round++) {
      const gsoSize = 48 + prng.int(9000);
      const payload = 1 + prng.int(65535 - IP - 60 - 14);
      const flags = ACK | (prng.int(2) ? PSH : 0) | (prng.int(2) ? FIN : 0) | (prng.int(2) ? CWR : 0);
      const { read, frame, thl } = superSegment(prng, { payload, gsoSize, flags, options: 4 * prng.int(11) });
      const out = segments(read);
      expect(out.length).toBe(Math.ceil(payload / gsoSize));
      const id0 = u16(frame, ETH + 4);
      const seq0 = u32(frame, ETH + IP + 4);
      const data: Uint8Array[] = [];
      out.forEach((s, i) => {
        const last = i === out.length - 1;
        const n = last ? payload - i * gsoSize : gsoSize;
        expect(s.length).toBe(ETH + IP + thl + n);
        expect(s.subarray(0, ETH)).toEqual(Buffer.from(frame.subarray(0, ETH)));
        const ip = s.subarray(ETH, ETH + IP);
        expect(u16(ip, 2)).toBe(IP + thl + n);
        expect(u16(ip, 4)).toBe((id0 + i) & 0xffff);
        expect(sum16(ip), 'IPv4 header checksum').toBe(0xffff);
        const tcp = s.subarray(ETH + IP);
        expect(u32(tcp, 4)).toBe((seq0 + i * gsoSize) >>> 0);
        expect(tcp[13]).toBe(flags & ~(last ? 0 : FIN | PSH) & ~(i > 0 ? CWR : 0));
        expect(sum16(tcp, pseudo(ip, 6, tcp.length)), 'TCP checksum').toBe(0xffff);
        const original = frame.subarray(ETH + IP, ETH + IP + thl);
        expect(tcp.subarray(0, 4), 'ports').toEqual(Buffer.from(original.subarray(0, 4)));
        expect(tcp.subarray(8, 13), 'acknowledgment, data offset').toEqual(Buffer.from(original.subarray(8, 13)));
        expect(tcp.subarray(14, 16), 'window').toEqual(Buffer.from(original.subarray(14, 16)));
        expect(tcp.subarray(18, thl), 'urgent pointer, options').toEqual(Buffer.from(original.subarray(18, thl)));
        data.push(tcp.subarray(thl));
      });
      expect(Buffer.compare(Buffer.concat(data), frame.subarray(ETH + IP + thl)), 'payload').toBe(0);
    }
  });
});

describe('a frame without segmentation', () => {
  it('goes as it is, or with the checksum the kernel left to be completed: TCP, UDP, UDP all ones for zero', () => {
    const prng = new Prng(7);
    const plain = Uint8Array.of(
      ...vnetHeader({ flags: 0, gso: 0, hdrLen: 0, gsoSize: 0, start: 0, offset: 0 }),
      ...prng.bytes(60),
    );
    expect(segments(plain)).toEqual([Buffer.from(plain.subarray(VNET))]);
    for (const protocol of [6, 17]) {
      for (let round = 0; round < 50; round++) {
        const { frame } = superSegment(prng, { payload: 1 + prng.int(1400), gsoSize: 1, flags: ACK, options: 0 });
        const ip = frame.subarray(ETH, ETH + IP);
        ip[9] = protocol;
        const l4 = frame.subarray(ETH + IP);
        const offset = protocol === 6 ? 16 : 6;
        const partial = pseudo(ip, protocol, l4.length);
        l4.fill(0, offset, offset + 2);
        l4[offset] = partial >> 8;
        l4[offset + 1] = partial & 0xff;
        const read = Uint8Array.of(
          ...vnetHeader({ flags: 1, gso: 0, hdrLen: 0, gsoSize: 0, start: ETH + IP, offset }),
          ...frame,
        );
        const [out] = segments(read);
        const got = out!.subarray(ETH + IP);
        expect(sum16(got, pseudo(ip, protocol, l4.length))).toBe(0xffff);
        expect(got.subarray(0, offset)).toEqual(Buffer.from(l4.subarray(0, offset)));
        expect(got.subarray(offset + 2)).toEqual(Buffer.from(l4.subarray(offset + 2)));
      }
    }
  });
});

describe('reads the kernel would not hand over', () => {
  const good = () => superSegment(new Prng(3), { payload: 5000, gsoSize: 1448, flags: ACK, options: 12 });

  it('are bad-frame: too short, a GSO type not offered, no segment size, headers where the metadata does not say', () => {
    const cases: Array<[string, (r: Uint8Array) => Uint8Array]> = [
      ['empty', () => new Uint8Array(0)],
      ['vnet header only', (r) => r.subarray(0, VNET)],
      ['a frame shorter than Ethernet', (r) => r.subarray(0, VNET + 13)],
      ['UDP segmentation (not offered)', (r) => r.map((b, i) => (i === 1 ? 5 : b))],
      ['TCPv6 segmentation (not offered)', (r) => r.map((b, i) => (i === 1 ? 4 : b))],
      ['segment size 0', (r) => r.map((b, i) => (i === 4 || i === 5 ? 0 : b))],
      ['segment size below the least MSS Linux sends (48)', (r) => r.map((b, i) => (i === 4 ? 47 : i === 5 ? 0 : b))],
      ['no NEEDS_CSUM with GSO', (r) => r.map((b, i) => (i === 0 ? 0 : b))],
      ['csum_start not after the IPv4 header', (r) => r.map((b, i) => (i === 6 ? 40 : b))],
      ['not IPv4', (r) => r.map((b, i) => (i === VNET + 12 ? 0x86 : b))],
      ['not TCP', (r) => r.map((b, i) => (i === VNET + ETH + 9 ? 17 : b))],
      ['TCP header past the end', (r) => r.subarray(0, VNET + ETH + IP + 30)],
      ['no payload after the headers', (r) => r.subarray(0, VNET + ETH + IP + 32)],
      [
        'checksum field past the end (no GSO)',
        () =>
          Uint8Array.of(
            ...vnetHeader({ flags: 1, gso: 0, hdrLen: 0, gsoSize: 0, start: 50, offset: 16 }),
            ...new Uint8Array(60),
          ),
      ],
    ];
    for (const [what, make] of cases) expect(addon.tapSegment(make(good().read)), what).toBe('bad-frame');
  });

  it('random reads and mutated super-segments: bad-frame or segments that stay within the read, never a crash', () => {
    const prng = new Prng(99);
    for (let round = 0; round < 20_000; round++) {
      let read: Uint8Array;
      if (round % 2) {
        read = prng.bytes(prng.int(200));
      } else {
        read = good().read.slice();
        for (let k = 1 + prng.int(4); k > 0; k--) read[prng.int(VNET + ETH + IP + 32)] = prng.int(256);
        read = read.subarray(0, Math.max(0, read.length - prng.int(3000)));
      }
      const r = addon.tapSegment(read);
      if (typeof r === 'string') {
        expect(r).toBe('bad-frame');
        continue;
      }
      for (const s of r)
        expect(s.length).toBeLessThanOrEqual(Math.max(read.length - VNET, TAP_HEADERS_MAX + read.length));
    }
  });
});

const TAP_HEADERS_MAX = 14 + 60 + 60;
