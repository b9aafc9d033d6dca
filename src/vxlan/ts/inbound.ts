import { IPPROTO_UDP, UDP_HEADER_LENGTH, VXLAN_PORT } from '../wire/constants.js';
import type { Dropped } from '../wire/drops.js';
import { openEspDanger, parseEspHeader, parseEspPlaintext } from '../wire/esp.js';
import { REPLAY_DUPLICATE, REPLAY_TOO_OLD } from '../sa/replay.js';
import type { InboundSa } from '../sa/sa.js';
import type { InboundSaLookup } from '../sa/table.js';
import { classifyUdp4500Payload, parseUdpHeader } from '../wire/udp.js';
import { parseVxlanHeader } from '../wire/vxlan.js';

export type InboundResult =
  | {
      ok: true;
      sa: InboundSa;
      vni: number;
      /** The VXLAN datagram (VXLAN header + Ethernet frame) to deliver to the local VTEP on port 4789. */
      vxlan: Uint8Array;
      /** The inner UDP source port the sender's VTEP chose (its flow entropy, RFC 7348 §5). */
      srcPort: number;
    }
  | (Dropped & { sa?: InboundSa });

/**
 * Inbound: a UDP/4500 payload from the underlay → the VXLAN datagram for the
 * VTEP. The steps run in this order and no other (RFC 4303 §3.4): the replay
 * window is consulted before any AES work and moves only after the ICV verified;
 * nothing inside the ciphertext is looked at before it is authentic; the VNI is
 * checked last, against the network the SA belongs to.
 */
export function processInbound(datagram: Uint8Array, sas: InboundSaLookup): InboundResult {
  // 1. RFC 3948 §2: keepalives and IKE share the port.
  const kind = classifyUdp4500Payload(datagram);
  if (kind !== 'esp') return { ok: false, drop: kind };

  // 2. Length, then the SPI names the SA.
  const header = parseEspHeader(datagram);
  if (!header.ok) return header;
  const sa = sas.inbound(header.spi);
  if (!sa) return { ok: false, drop: 'unknown-spi' };

  // 3. Replay check, before decryption.
  const seqHi = sa.replay.check(header.seqLo);
  if (seqHi === REPLAY_TOO_OLD) return { ok: false, drop: 'replay-too-old', sa };
  if (seqHi === REPLAY_DUPLICATE) return { ok: false, drop: 'replay-duplicate', sa };

  // 4. ICV verify and decrypt.
  const plaintext = openEspDanger(sa.cipher, datagram, seqHi);
  if (!plaintext) return { ok: false, drop: 'auth-failed', sa };

  // 5. Replay update, only now that the packet is authentic.
  if (!sa.replay.update(seqHi, header.seqLo)) return { ok: false, drop: 'replay-duplicate', sa };

  // 6. Inner parse: trailer, next header, UDP to 4789, VXLAN.
  const inner = parseEspPlaintext(plaintext);
  if (!inner.ok) return { ...inner, sa };
  if (inner.nextHeader !== IPPROTO_UDP) return { ok: false, drop: 'bad-next-header', sa };
  const udp = parseUdpHeader(inner.payload);
  if (!udp.ok) return { ...udp, sa };
  if (udp.header.dstPort !== VXLAN_PORT) return { ok: false, drop: 'bad-inner-udp', sa };
  const vxlan = inner.payload.subarray(UDP_HEADER_LENGTH);
  const parsed = parseVxlanHeader(vxlan);
  if (!parsed.ok) return { ...parsed, sa };

  // 7. Isolation: an SA carries exactly one network.
  if (parsed.vni !== sa.vni) return { ok: false, drop: 'vni-mismatch', sa };

  sa.counters.packets++;
  sa.counters.bytes += vxlan.length;
  return { ok: true, sa, vni: parsed.vni, vxlan, srcPort: udp.header.srcPort };
}
