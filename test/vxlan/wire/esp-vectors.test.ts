import { afterAll, describe, expect, it } from 'vitest';
import { bytesToHex, hexToBytes } from '../../../src/crypto/bytes.js';
import { SecretKey } from '../../../src/crypto/secret.js';
import { ESP_IN_UDP_PORT } from '../../../src/vxlan/wire/constants.js';
import {
  createEspCipher,
  encodeEspPlaintext,
  openEspDanger,
  parseEspPlaintext,
  sealEspDanger,
} from '../../../src/vxlan/wire/esp.js';
import type { EspVector, EspVectorFile } from '../../../src/vxlan/wire/esp-vectors.js';
import { ESP_IMPLEMENTATIONS } from '../../../src/cli/vectors-check.js';
import { processInbound } from '../../../src/vxlan/ts/inbound.js';
import { InboundSa } from '../../../src/vxlan/sa/sa.js';
import { encodeUdpHeader } from '../../../src/vxlan/wire/udp.js';
import { loadVectors, VectorTally } from '../../support/vectors.js';

const FILE = 'esp/scapy_esp_in_udp_aes_gcm.json';
const vectors = loadVectors<EspVectorFile>(FILE);
const tally = new VectorTally();
afterAll(() => console.log(tally.report()));

// The sealer and opener are exercised here directly; test/cli covers the
// `veil vectors check` command that wraps the same code.
for (const provider of ESP_IMPLEMENTATIONS) {
  describe(`${FILE} [${provider.name}]`, () => {
    for (const v of vectors.tests) {
      const label = `${FILE} #${v.tcId} ${v.cipher} ${v.esn ? 'ESN' : '32-bit seq'} [${provider.name}]`;
      const cipher = () => createEspCipher(v.spi, new SecretKey(hexToBytes(v.keymat)), v.esn, provider);

      it(`${label}: seal reproduces the packet byte for byte`, () => {
        tally.add(FILE, provider.name);
        const esp = sealEspDanger(
          cipher(),
          v.seqHi,
          v.seqLo,
          hexToBytes(v.iv),
          encodeEspPlaintext(hexToBytes(v.payload), v.nextHeader),
        );
        expect(bytesToHex(esp)).toBe(v.esp);
        const udp = bytesToHex(encodeUdpHeader(ESP_IN_UDP_PORT, ESP_IN_UDP_PORT, esp.length)) + v.esp;
        expect(udp).toBe(v.udpEncapsulated);
        expect(v.ipv4Packet!.endsWith(udp)).toBe(true);
      });

      it(`${label}: open recovers the payload and next header 17`, () => {
        const plaintext = openEspDanger(cipher(), hexToBytes(v.esp), v.seqHi);
        expect(plaintext).not.toBeNull();
        const inner = parseEspPlaintext(plaintext!);
        expect(inner.ok && bytesToHex(inner.payload)).toBe(v.payload);
        expect(inner.ok && inner.nextHeader).toBe(17);
      });

      if (v.seqHi === 0) {
        it(`${label}: the full inbound path delivers it to VNI ${v.vni}`, () => {
          const sa = new InboundSa(cipher(), v.vni!);
          const result = processInbound(hexToBytes(v.esp), { inbound: (spi) => (spi === v.spi ? sa : undefined) });
          expect(result.ok).toBe(true);
          if (result.ok) expect(bytesToHex(result.vxlan)).toBe(v.payload.slice(16));
        });
      }
    }
  });
}

it('the vector file covers AES-128 and AES-256, with and without ESN, random and counter IVs', () => {
  const kinds = new Set(vectors.tests.map((v: EspVector) => `${v.cipher}/${v.esn}`));
  expect(kinds).toEqual(
    new Set(['aes128-gcm-16/false', 'aes128-gcm-16/true', 'aes256-gcm-16/false', 'aes256-gcm-16/true']),
  );
  expect(vectors.tests).toHaveLength(28);
});
