import { randomBytes } from 'node:crypto';
import type { AeadProvider } from '../../src/crypto/aead.js';
import { nodeAeadProvider } from '../../src/crypto/aead-node.js';
import { SecretKey } from '../../src/crypto/secret.js';
import { createEspCipher, type EspCipher } from '../../src/vxlan/wire/esp.js';
import { InboundSa, OutboundSa } from '../../src/vxlan/sa/sa.js';
import { encodeVxlanHeader } from '../../src/vxlan/wire/vxlan.js';
import { concatBytes } from '../../src/crypto/bytes.js';

/** A matched pair of SA halves with a random AES-128-GCM KEYMAT (key || salt). */
export function saPair(
  spi: number,
  vni: number,
  opts: { esn?: boolean; budget?: number; provider?: AeadProvider } = {},
) {
  const keymat = new SecretKey(randomBytes(20));
  const esn = opts.esn ?? true;
  const cipher = (): EspCipher => createEspCipher(spi, keymat, esn, opts.provider ?? nodeAeadProvider);
  return { keymat, outbound: new OutboundSa(cipher(), vni, opts.budget), inbound: new InboundSa(cipher(), vni) };
}

/** A VXLAN datagram (header + a minimal Ethernet frame) as the local VTEP would send it. */
export function vxlanDatagram(vni: number, frame: Uint8Array = randomBytes(64)): Uint8Array {
  return concatBytes(encodeVxlanHeader(vni), frame);
}
