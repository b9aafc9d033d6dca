// Malformed DNS queries for the fuzz tests (unit: test/dns/fuzz.test.ts; from inside a container:
// test/dns/fuzz-sender.ts). Seeded: a failure names its seed and replays exactly.
import dnsPacket from 'dns-packet';
import type { Prng } from '../support/prng.js';

export const validQuery = (p: Prng): Buffer =>
  dnsPacket.encode({
    type: 'query',
    id: p.int(65536),
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [
      {
        type: p.pick(['A', 'AAAA', 'PTR', 'TXT'] as const),
        name: p.pick(['web', 'svc.loopnet', '2.0.0.127.in-addr.arpa', 'nope.loopnet', 'example.org']),
      },
    ],
    additionals: p.int(2)
      ? [
          {
            type: 'OPT',
            name: '.',
            udpPayloadSize: p.int(65536),
            extendedRcode: 0,
            ednsVersion: 0,
            flags: 0,
            flag_do: false,
            options: [],
          },
        ]
      : [],
  });

/** One malformed (or merely odd) message. Every kind of damage a parser meets on the wire. */
export function malformed(p: Prng): Buffer {
  const base = validQuery(p);
  switch (p.int(10)) {
    case 0:
      return Buffer.from(p.bytes(p.int(600)));
    case 1:
      return base.subarray(0, p.int(base.length)); // cut short
    case 2: {
      // bit flips
      const b = Buffer.from(base);
      for (let i = p.int(8) + 1; i > 0; i--) b[p.int(b.length)]! ^= 1 << p.int(8);
      return b;
    }
    case 3:
      return Buffer.concat([base, Buffer.from(p.bytes(p.int(64)))]); // trailing garbage
    case 4: {
      // hostile counts: 65535 questions / answers / additionals
      const b = Buffer.from(base);
      b.writeUInt16BE(0xffff, 4 + 2 * p.int(4));
      return b;
    }
    case 5: {
      // compression pointers: to itself, forward, past the end
      const h = Buffer.from(base.subarray(0, 12));
      const ptr = p.pick([0xc00c, 0xc00d, 0xc0ff, 0xffff, 0xc000]);
      const q = Buffer.alloc(6);
      q.writeUInt16BE(ptr, 0);
      q.writeUInt16BE(1, 2);
      q.writeUInt16BE(1, 4);
      return Buffer.concat([h, q]);
    }
    case 6: {
      // labels: 63+ bytes, 0x40/0x80 label types, names past 255 bytes, no terminator
      const h = Buffer.from(base.subarray(0, 12));
      h.writeUInt16BE(1, 4);
      const parts: number[] = [];
      const n = p.int(12) + 1;
      for (let i = 0; i < n; i++) {
        const len = p.pick([63, 64, 0x41, 0x80, 0x3f, p.int(256)]);
        parts.push(len, ...p.bytes(Math.min(len, 63)));
      }
      if (p.int(2)) parts.push(0, 0, 1, 0, 1);
      return Buffer.concat([h, Buffer.from(parts)]);
    }
    case 7: {
      // a response, or a weird opcode / rcode / Z bits
      const b = Buffer.from(base);
      b.writeUInt16BE(p.u32() & 0xffff, 2);
      return b;
    }
    case 8: {
      // OPT with broken options / rdlength
      const h = Buffer.from(base.subarray(0, 12));
      h.writeUInt16BE(1, 4);
      h.writeUInt16BE(1, 10);
      const q = dnsPacket.encode({ type: 'query', questions: [{ type: 'A', name: 'web' }] }).subarray(12);
      const opt = Buffer.from([0, 0, 41, 0x10, 0, 0, 0, 0, 0, p.int(256), p.int(256), ...p.bytes(p.int(20))]);
      return Buffer.concat([h, q, opt]);
    }
    default:
      return Buffer.from(p.bytes(12 + p.int(40))); // header-sized noise
  }
}
