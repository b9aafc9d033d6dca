import { describe, expect, it } from 'vitest';
import type { AeadProvider } from '../../../src/crypto/aead.js';
import { nodeAeadProvider } from '../../../src/crypto/aead-node.js';
import { bytesToHex, writeU32 } from '../../../src/crypto/bytes.js';
import { IPPROTO_UDP, VXLAN_PORT } from '../../../src/vxlan/wire/constants.js';
import { encodeEspPlaintext, ivFromSequence, sealEspDanger } from '../../../src/vxlan/wire/esp.js';
import { processInbound } from '../../../src/vxlan/ts/inbound.js';
import { sealOutbound } from '../../../src/vxlan/ts/outbound.js';
import type { InboundSa } from '../../../src/vxlan/sa/sa.js';
import { encodeUdpHeader } from '../../../src/vxlan/wire/udp.js';
import { concatBytes } from '../../../src/crypto/bytes.js';
import { saPair, vxlanDatagram } from '../../support/esp-fixtures.js';

/** An AEAD provider that counts open() calls, to prove which steps reach AES. */
function countingProvider(): AeadProvider & { opens: number } {
  const p = {
    name: 'counting',
    gcmNonceLengths: nodeAeadProvider.gcmNonceLengths,
    opens: 0,
    create(algorithm: Parameters<AeadProvider['create']>[0], key: Parameters<AeadProvider['create']>[1]) {
      const inner = nodeAeadProvider.create(algorithm, key);
      return {
        algorithm,
        implementation: 'counting',
        seal: inner.seal.bind(inner),
        open: (n: Uint8Array, s: Uint8Array, a: Uint8Array) => {
          p.opens++;
          return inner.open(n, s, a);
        },
      };
    },
  };
  return p;
}

const table = (...sas: InboundSa[]) => ({ inbound: (spi: number) => sas.find((sa) => sa.spi === spi) });

describe('outbound → inbound', () => {
  it('delivers the VTEP datagram unchanged, with its flow source port', () => {
    const { outbound, inbound } = saPair(0x1000, 42);
    const vxlan = vxlanDatagram(42);
    const sealed = sealOutbound(vxlan, 51234, outbound);
    expect(sealed.ok).toBe(true);
    const got = processInbound((sealed as { datagram: Uint8Array }).datagram, table(inbound));
    expect(got.ok && bytesToHex(got.vxlan)).toBe(bytesToHex(vxlan));
    expect(got.ok && got.srcPort).toBe(51234);
    expect(inbound.counters.packets).toBe(1);
  });

  it('fails closed: no SA means no packet, never plaintext', () => {
    expect(sealOutbound(vxlanDatagram(42), 1, undefined)).toEqual({ ok: false, drop: 'no-outbound-sa' });
  });

  it("never seals a datagram of one network under another network's SA", () => {
    const { outbound } = saPair(0x1000, 42);
    expect(sealOutbound(vxlanDatagram(43), 1, outbound)).toEqual({ ok: false, drop: 'vni-mismatch' });
    expect(outbound.counter.used).toBe(0);
  });

  it('stops at the sequence budget instead of wrapping, and never repeats an IV', () => {
    const { outbound } = saPair(0x1000, 42, { budget: 5 });
    const ivs = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const r = sealOutbound(vxlanDatagram(42), 1, outbound);
      expect(r.ok).toBe(true);
      if (r.ok) ivs.add(bytesToHex(r.datagram.subarray(8, 16)));
    }
    expect(ivs.size).toBe(5);
    expect(sealOutbound(vxlanDatagram(42), 1, outbound)).toEqual({ ok: false, drop: 'seq-exhausted' });
  });
});

describe('inbound processing order (RFC 4303 §3.4)', () => {
  it('unknown SPIs and replays are dropped before any AES work', () => {
    const provider = countingProvider();
    const { outbound, inbound } = saPair(0x2000, 7, { provider });
    const r = sealOutbound(vxlanDatagram(7), 1, outbound);
    if (!r.ok) throw new Error('seal failed');
    const wrongSpi = Uint8Array.from(r.datagram);
    writeU32(wrongSpi, 0, 0x2001);
    expect(processInbound(wrongSpi, table(inbound))).toMatchObject({ ok: false, drop: 'unknown-spi' });
    expect(provider.opens).toBe(0);
    expect(processInbound(r.datagram, table(inbound)).ok).toBe(true);
    expect(provider.opens).toBe(1);
    expect(processInbound(r.datagram, table(inbound))).toMatchObject({ ok: false, drop: 'replay-duplicate' });
    expect(provider.opens).toBe(1);
  });

  it('a forged packet does not move the window: the genuine one with the same number still arrives', () => {
    const { outbound, inbound } = saPair(0x2000, 7);
    const r = sealOutbound(vxlanDatagram(7), 1, outbound);
    if (!r.ok) throw new Error('seal failed');
    const forged = Uint8Array.from(r.datagram);
    forged[forged.length - 1]! ^= 1;
    expect(processInbound(forged, table(inbound))).toMatchObject({ ok: false, drop: 'auth-failed' });
    expect(processInbound(r.datagram, table(inbound)).ok).toBe(true);
  });

  it('isolation: an authentic packet of SA(VNI 7) carrying VNI 8 is dropped after authentication, and counts in the window', () => {
    const { outbound, inbound } = saPair(0x2000, 7);
    const cipher = outbound.cipher;
    const payload = concatBytes(encodeUdpHeader(1, VXLAN_PORT, 72), vxlanDatagram(8));
    const forged = sealEspDanger(cipher, 0, 1, ivFromSequence(0, 1), encodeEspPlaintext(payload, IPPROTO_UDP));
    expect(processInbound(forged, table(inbound))).toMatchObject({ ok: false, drop: 'vni-mismatch' });
    expect(processInbound(forged, table(inbound))).toMatchObject({ ok: false, drop: 'replay-duplicate' });
    expect(inbound.counters.packets).toBe(0);
  });

  it('authentic but malformed contents are dropped with their reason', () => {
    const { outbound, inbound } = saPair(0x2000, 7);
    const seal = (seq: number, plaintext: Uint8Array) =>
      sealEspDanger(outbound.cipher, 0, seq, ivFromSequence(0, seq), plaintext);
    const good = concatBytes(encodeUdpHeader(1, VXLAN_PORT, 72), vxlanDatagram(7));
    const toPort = concatBytes(encodeUdpHeader(1, 53, 72), vxlanDatagram(7));
    const badFlags = Uint8Array.from(good);
    badFlags[8] = 0;
    const cases: Array<[Uint8Array, string]> = [
      [encodeEspPlaintext(good, 4), 'bad-next-header'],
      [encodeEspPlaintext(toPort, IPPROTO_UDP), 'bad-inner-udp'],
      [encodeEspPlaintext(good.subarray(0, 40), IPPROTO_UDP), 'bad-inner-udp'],
      [encodeEspPlaintext(badFlags, IPPROTO_UDP), 'bad-vxlan-header'],
      [Uint8Array.of(...good, 1, 2, 3, 9, 3, 17).subarray(0, good.length + 4), 'bad-padding'],
    ];
    cases.forEach(([plaintext, drop], i) => {
      expect(processInbound(seal(i + 1, plaintext), table(inbound))).toMatchObject({ ok: false, drop });
    });
  });

  it('keepalives, the non-ESP marker and runts are told apart', () => {
    const { inbound } = saPair(0x2000, 7);
    expect(processInbound(Uint8Array.of(0xff), table(inbound))).toEqual({ ok: false, drop: 'nat-keepalive' });
    expect(processInbound(new Uint8Array(64), table(inbound))).toEqual({ ok: false, drop: 'non-esp-marker' });
    expect(processInbound(Uint8Array.of(0, 0, 0x20, 0, 0, 0, 0, 1), table(inbound))).toEqual({
      ok: false,
      drop: 'truncated',
    });
  });
});
