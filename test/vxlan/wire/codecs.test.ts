import { describe, expect, it } from 'vitest';
import { bytesToHex } from '../../../src/crypto/bytes.js';
import {
  ENCRYPTED_OVERHEAD,
  ESP_SEQ32_MAX,
  ESP_SEQ64_MAX,
  overlayMtu,
  PLAIN_OVERHEAD,
} from '../../../src/vxlan/wire/constants.js';
import { encodeEspPlaintext, parseEspPlaintext } from '../../../src/vxlan/wire/esp.js';
import { SEQ_EXHAUSTED, SequenceCounter } from '../../../src/vxlan/sa/sequence.js';
import { classifyUdp4500Payload, encodeUdpHeader, parseUdpHeader } from '../../../src/vxlan/wire/udp.js';
import { encodeVxlanHeader, parseVxlanHeader } from '../../../src/vxlan/wire/vxlan.js';

describe('sequence counter (RFC 4303 §3.3.3)', () => {
  it('starts at 1 and refuses to wrap at its budget', () => {
    const c = new SequenceCounter(true, 3);
    expect([c.next(), c.next(), c.next()]).toEqual([1, 2, 3]);
    expect(c.remaining).toBe(0);
    for (let i = 0; i < 5; i++) expect(c.next()).toBe(SEQ_EXHAUSTED);
    expect(c.used).toBe(3);
  });

  it('is bounded by 2^32 - 1 without ESN and by 2^53 - 1 with it', () => {
    expect(new SequenceCounter(false).limit).toBe(ESP_SEQ32_MAX);
    expect(new SequenceCounter(true).limit).toBe(ESP_SEQ64_MAX);
    expect(new SequenceCounter(false, 2 ** 40).limit).toBe(ESP_SEQ32_MAX);
    expect(() => new SequenceCounter(true, 0)).toThrow(RangeError);
  });
});

describe('VXLAN header (RFC 7348 §5)', () => {
  it('encodes the I flag and a 24-bit VNI, and parses it back', () => {
    expect(bytesToHex(encodeVxlanHeader(0x123456))).toBe('0800000012345600');
    for (const vni of [0, 1, 4096, 0xffffff])
      expect(parseVxlanHeader(encodeVxlanHeader(vni))).toEqual({ ok: true, vni });
  });

  it('ignores reserved bits, refuses a clear I flag and short input', () => {
    const h = encodeVxlanHeader(42);
    h[1] = 0xff;
    h[7] = 0xff;
    expect(parseVxlanHeader(h)).toEqual({ ok: true, vni: 42 });
    expect(parseVxlanHeader(Uint8Array.of(0, 0, 0, 0, 0, 0, 42, 0))).toEqual({ ok: false, drop: 'bad-vxlan-header' });
    expect(parseVxlanHeader(h.subarray(0, 7))).toEqual({ ok: false, drop: 'bad-vxlan-header' });
    expect(() => encodeVxlanHeader(2 ** 24)).toThrow(RangeError);
  });
});

describe('ESP trailer (RFC 4303 §2.4)', () => {
  it('pads with 1, 2, 3 ... to a 4-byte boundary and strips it again', () => {
    for (let n = 0; n < 12; n++) {
      const payload = new Uint8Array(n).fill(0xee);
      const pt = encodeEspPlaintext(payload, 17);
      expect(pt.length % 4).toBe(0);
      const pad = pt[pt.length - 2]!;
      expect(Array.from(pt.subarray(n, n + pad))).toEqual(Array.from({ length: pad }, (_, i) => i + 1));
      const back = parseEspPlaintext(pt);
      expect(back.ok && back.payload.length === n && back.nextHeader === 17).toBe(true);
    }
  });

  it('names what is wrong with a bad trailer', () => {
    const pt = encodeEspPlaintext(new Uint8Array(5), 17); // 5 + 1 pad + 2
    const badPad = Uint8Array.from(pt);
    badPad[5] = 9;
    expect(parseEspPlaintext(badPad)).toEqual({ ok: false, drop: 'bad-padding' });
    const badLen = Uint8Array.from(pt);
    badLen[badLen.length - 2] = 200;
    expect(parseEspPlaintext(badLen)).toEqual({ ok: false, drop: 'bad-pad-length' });
    expect(parseEspPlaintext(pt.subarray(0, 7))).toEqual({ ok: false, drop: 'bad-alignment' });
  });
});

describe('UDP (RFC 768, RFC 3948)', () => {
  it('encodes a zero-checksum header and checks the length on parse', () => {
    expect(bytesToHex(encodeUdpHeader(4500, 4500, 100))).toBe('11941194006c0000');
    const dgram = new Uint8Array(20);
    dgram.set(encodeUdpHeader(1234, 4789, 12));
    expect(parseUdpHeader(dgram)).toEqual({
      ok: true,
      header: { srcPort: 1234, dstPort: 4789, length: 20, checksum: 0 },
    });
    expect(parseUdpHeader(dgram.subarray(0, 19))).toEqual({ ok: false, drop: 'bad-inner-udp' });
  });

  it('tells ESP from NAT-keepalives and the non-ESP marker on port 4500', () => {
    expect(classifyUdp4500Payload(Uint8Array.of(0xff))).toBe('nat-keepalive');
    expect(classifyUdp4500Payload(new Uint8Array(40))).toBe('non-esp-marker');
    expect(classifyUdp4500Payload(Uint8Array.of(0, 0, 1, 0, 0, 0, 0, 1))).toBe('esp');
  });
});

describe('overlay MTU', () => {
  it('leaves room for the worst-case encapsulation on a 1500-byte underlay', () => {
    expect(ENCRYPTED_OVERHEAD).toBe(95);
    expect(PLAIN_OVERHEAD).toBe(50);
    expect(overlayMtu(1500, false)).toBe(1450);
    expect(overlayMtu(1500, true)).toBe(1405);
  });
});
