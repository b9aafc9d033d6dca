// The native ESP seal/open (native/esp.c through src/vxlan/native/addon.ts) against the same vectors as the
// TypeScript path, and differentially against it: what one seals, the other opens.
import { afterAll, describe, expect, it } from 'vitest';
import { nodeAeadProvider } from '../../../src/crypto/aead-node.js';
import { AEAD_TAG_LENGTH, AeadInputError, type AeadAlgorithm } from '../../../src/crypto/aead.js';
import { bytesToHex, concatBytes, hexToBytes, readU32 } from '../../../src/crypto/bytes.js';
import { SecretKey } from '../../../src/crypto/secret.js';
import { IPPROTO_UDP, VXLAN_PORT } from '../../../src/vxlan/wire/constants.js';
import { createEspCipher, encodeEspPlaintext, ivFromSequence, parseEspPlaintext } from '../../../src/vxlan/wire/esp.js';
import type { EspVectorFile } from '../../../src/vxlan/wire/esp-vectors.js';
import { processInbound } from '../../../src/vxlan/ts/inbound.js';
import { nativeAeadProvider, NativeEspSa } from '../../../src/vxlan/native/addon.js';
import { sealOutbound } from '../../../src/vxlan/ts/outbound.js';
import { InboundSa } from '../../../src/vxlan/sa/sa.js';
import { encodeUdpHeader } from '../../../src/vxlan/wire/udp.js';
import { saPair, vxlanDatagram } from '../../support/esp-fixtures.js';
import { Prng } from '../../support/prng.js';
import { loadVectors, VectorTally, type WycheproofFile, type WycheproofResult } from '../../support/vectors.js';

const ESP_FILE = 'esp/scapy_esp_in_udp_aes_gcm.json';
const WYCHEPROOF_FILE = 'wycheproof/aes_gcm_test.json';
const tally = new VectorTally();
afterAll(() => console.log(tally.report()));

describe(`${ESP_FILE} [native]`, () => {
  const vectors = loadVectors<EspVectorFile>(ESP_FILE);
  it('covers all 28 cases', () => expect(vectors.tests).toHaveLength(28));
  for (const v of vectors.tests) {
    const label = `${ESP_FILE} #${v.tcId} ${v.cipher} ${v.esn ? 'ESN' : '32-bit seq'} [native]`;
    const keymat = () => new SecretKey(hexToBytes(v.keymat));

    it(`${label}: seal reproduces the packet byte for byte`, () => {
      tally.add(ESP_FILE, 'native');
      const sa = new NativeEspSa(v.spi, keymat(), v.esn, 'seal');
      const esp = sa.sealDanger(
        v.seqHi,
        v.seqLo,
        hexToBytes(v.iv),
        encodeEspPlaintext(hexToBytes(v.payload), v.nextHeader),
      );
      expect(bytesToHex(esp)).toBe(v.esp);
    });

    it(`${label}: open recovers the payload and next header 17`, () => {
      const sa = new NativeEspSa(v.spi, keymat(), v.esn, 'open');
      const plaintext = sa.openDanger(hexToBytes(v.esp), v.seqHi);
      expect(plaintext).not.toBeNull();
      const inner = parseEspPlaintext(plaintext!);
      expect(inner.ok && bytesToHex(inner.payload)).toBe(v.payload);
      expect(inner.ok && inner.nextHeader).toBe(17);
    });

    it(`${label}: a flipped ICV bit or a wrong seqHi does not open`, () => {
      const sa = new NativeEspSa(v.spi, keymat(), v.esn, 'open');
      const esp = hexToBytes(v.esp);
      esp[esp.length - 1]! ^= 1;
      expect(sa.openDanger(esp, v.seqHi)).toBeNull();
      // With ESN the high half is authenticated (RFC 4303 §2.2.1); without, it is not part of the AAD.
      if (v.esn) expect(sa.openDanger(hexToBytes(v.esp), v.seqHi + 1)).toBeNull();
    });
  }
});

interface AeadCase {
  tcId: number;
  comment: string;
  key: string;
  iv: string;
  aad: string;
  msg: string;
  ct: string;
  tag: string;
  result: WycheproofResult;
}
interface AeadGroup {
  keySize: number;
  ivSize: number;
  tagSize: number;
  tests: AeadCase[];
}

describe(`${WYCHEPROOF_FILE} [native] (96-bit IV, 128-bit tag)`, () => {
  const file = loadVectors<WycheproofFile<AeadGroup>>(WYCHEPROOF_FILE);
  const groups = file.testGroups.filter((g) => g.ivSize === 96 && g.tagSize === AEAD_TAG_LENGTH * 8);
  it('has 96-bit IV groups for AES-128, -192 and -256', () => {
    expect(new Set(groups.map((g) => g.keySize))).toEqual(new Set([128, 192, 256]));
  });
  for (const group of groups) {
    for (const c of group.tests) {
      it(`${WYCHEPROOF_FILE} #${c.tcId} ${c.result} ${c.comment} [native]`, () => {
        tally.add(WYCHEPROOF_FILE, 'native');
        const algorithm = `aes-${group.keySize}-gcm` as AeadAlgorithm;
        const key = new SecretKey(hexToBytes(c.key));
        const [iv, aad, msg, ct, tag] = [c.iv, c.aad, c.msg, c.ct, c.tag].map(hexToBytes) as Uint8Array[];
        const sealed = bytesToHex(nativeAeadProvider.create(algorithm, key).seal(iv!, msg!, aad!));
        const opened = nativeAeadProvider.create(algorithm, key).open(iv!, concatBytes(ct!, tag!), aad!);
        if (c.result === 'valid') {
          expect(sealed).toBe(c.ct + c.tag);
          expect(opened && bytesToHex(opened)).toBe(c.msg);
        } else {
          expect(opened).toBeNull();
        }
      });
    }
  }
  it('refuses other nonce lengths with AeadInputError, never computes something else', () => {
    const aead = nativeAeadProvider.create('aes-128-gcm', new SecretKey(new Uint8Array(16)));
    expect(() => aead.seal(new Uint8Array(16), new Uint8Array(1), new Uint8Array(0))).toThrow(AeadInputError);
    expect(() => aead.open(new Uint8Array(8), new Uint8Array(32), new Uint8Array(0))).toThrow(AeadInputError);
  });
});

describe('differential: TypeScript path ↔ native', () => {
  const ROUNDS = 2_000;
  const rng = new Prng(0x5eed);

  it(`${ROUNDS} random VXLAN datagrams sealed by the TS OutboundSa open in native`, () => {
    const { keymat, outbound } = saPair(0x0101_0001, 4096, { provider: nodeAeadProvider });
    const opener = new NativeEspSa(0x0101_0001, keymat, true, 'open');
    for (let i = 0; i < ROUNDS; i++) {
      const vxlan = vxlanDatagram(4096, rng.bytes(14 + rng.int(1400)));
      const srcPort = 1 + rng.int(65535);
      const sealed = sealOutbound(vxlan, srcPort, outbound);
      if (!sealed.ok) throw new Error(sealed.drop);
      const plaintext = opener.openDanger(sealed.datagram, 0);
      expect(plaintext).not.toBeNull();
      const inner = parseEspPlaintext(plaintext!);
      if (!inner.ok) throw new Error(inner.drop);
      expect(inner.nextHeader).toBe(IPPROTO_UDP);
      expect(bytesToHex(inner.payload)).toBe(
        bytesToHex(concatBytes(encodeUdpHeader(srcPort, VXLAN_PORT, vxlan.length), vxlan)),
      );
    }
  });

  it(`${ROUNDS} random VXLAN datagrams sealed in native open in the TS inbound path`, () => {
    const keymat = new SecretKey(rng.bytes(36)); // AES-256 this time
    const sealer = new NativeEspSa(0x0101_0002, keymat, true, 'seal');
    const sa = new InboundSa(createEspCipher(0x0101_0002, keymat, true, nodeAeadProvider), 4097);
    // Sequence numbers around the 2^32 boundary, so the ESN high half matters.
    const start = 2 ** 32 - ROUNDS / 2;
    for (let i = 0; i < ROUNDS; i++) {
      const seq = start + i;
      const hi = Math.floor(seq / 2 ** 32);
      const lo = seq >>> 0;
      const vxlan = vxlanDatagram(4097, rng.bytes(14 + rng.int(1400)));
      const payload = concatBytes(encodeUdpHeader(1 + rng.int(65535), VXLAN_PORT, vxlan.length), vxlan);
      const datagram = sealer.sealDanger(hi, lo, ivFromSequence(hi, lo), encodeEspPlaintext(payload, IPPROTO_UDP));
      expect(readU32(datagram, 4)).toBe(lo);
      if (i === 0) sa.replay.update(hi, lo - 1); // the receiver has seen the packet before the first one
      const result = processInbound(datagram, { inbound: (spi) => (spi === sa.spi ? sa : undefined) });
      if (!result.ok) throw new Error(`#${i}: ${result.drop}`);
      expect(bytesToHex(result.vxlan)).toBe(bytesToHex(vxlan));
    }
  });

  it('the native AeadProvider plugs into the TypeScript ESP code unchanged', () => {
    const keymat = new SecretKey(rng.bytes(20));
    const viaNative = createEspCipher(0x0101_0003, keymat, true, nativeAeadProvider);
    const viaNode = createEspCipher(0x0101_0003, keymat, true, nodeAeadProvider);
    const pt = encodeEspPlaintext(rng.bytes(100), IPPROTO_UDP);
    const nonce = concatBytes(viaNative.salt, ivFromSequence(0, 1));
    const aad = new Uint8Array(12);
    expect(bytesToHex(viaNative.aead.seal(nonce, pt, aad))).toBe(bytesToHex(viaNode.aead.seal(nonce, pt, aad)));
  });
});
