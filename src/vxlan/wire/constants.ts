// Wire constants of the data plane, each with the section that defines it.

// ---- RFC 768 / RFC 7348 §5: the inner UDP header that carries VXLAN ----
export const UDP_HEADER_LENGTH = 8;
export const UDP_SRC_PORT_OFFSET = 0;
export const UDP_DST_PORT_OFFSET = 2;
export const UDP_LENGTH_OFFSET = 4;
export const UDP_CHECKSUM_OFFSET = 6;
/** RFC 7348 §5: IANA-assigned VXLAN destination port. */
export const VXLAN_PORT = 4789;
/** RFC 8200/768: IP protocol number of UDP, the ESP next header for VXLAN in transport mode (RFC 4303 §2.6). */
export const IPPROTO_UDP = 17;

// ---- RFC 7348 §5: VXLAN header ----
export const VXLAN_HEADER_LENGTH = 8;
export const VXLAN_FLAGS_OFFSET = 0;
/** The I flag: "MUST be set to 1 for a valid VXLAN Network ID". */
export const VXLAN_FLAG_I = 0x08;
/** The 24-bit VNI sits in bytes 4..6 (its range: model/ids.ts VNI_MAX). */
export const VXLAN_VNI_OFFSET = 4;

// ---- RFC 4303 §2: ESP packet format ----
export const ESP_SPI_OFFSET = 0;
export const ESP_SPI_LENGTH = 4;
export const ESP_SEQ_OFFSET = 4;
export const ESP_SEQ_LENGTH = 4;
export const ESP_HEADER_LENGTH = ESP_SPI_LENGTH + ESP_SEQ_LENGTH;
/** RFC 4303 §2.1: SPI values 1-255 are reserved by IANA; 0 is local-only (and the RFC 3948 non-ESP marker). */
export const ESP_SPI_MIN = 256;
/** RFC 4303 §2.4: Pad Length and Next Header follow the padding. */
export const ESP_TRAILER_LENGTH = 2;
/** RFC 4303 §2.4: padding is 0..255 bytes. */
export const ESP_MAX_PAD_LENGTH = 255;
/** RFC 4303 §2.4: ciphertext (payload through Next Header) ends on a 4-byte boundary. */
export const ESP_ALIGNMENT = 4;
/** RFC 4303 §2.2 / §3.3.3: the first packet sent on an SA has sequence number 1; the counter never cycles. */
export const ESP_FIRST_SEQ = 1;
/** RFC 4303 §2.2: 32-bit sequence numbers without ESN. */
export const ESP_SEQ32_MAX = 0xffffffff;
/**
 * With ESN the space is 2^64 (RFC 4303 §2.2.1). veil counts in JavaScript
 * numbers and stops at 2^53 - 1: far beyond any key's life (285 years at 1 M
 * packets/s) and still "well before the 2^64 limit".
 */
export const ESP_SEQ64_MAX = Number.MAX_SAFE_INTEGER;

// ---- RFC 4106: AES-GCM for ESP ----
/** RFC 4106 §3.1: the explicit IV on the wire is 8 bytes. */
export const ESP_IV_OFFSET = ESP_HEADER_LENGTH;
export const ESP_IV_LENGTH = 8;
export const ESP_PAYLOAD_OFFSET = ESP_IV_OFFSET + ESP_IV_LENGTH;
/** RFC 4106 §4: nonce = salt (4, from KEYMAT, §8.1) || IV (8). */
export const ESP_SALT_LENGTH = 4;
export const ESP_NONCE_LENGTH = ESP_SALT_LENGTH + ESP_IV_LENGTH;
/** RFC 4106 §5: AAD = SPI || seq (8 bytes), or SPI || seq high || seq low (12 bytes) with ESN. */
export const ESP_AAD_LENGTH = 8;
export const ESP_AAD_ESN_LENGTH = 12;
/** RFC 4106 §6: ICV of 16 octets (veil never truncates it). */
export const ESP_ICV_LENGTH = 16;
/** Smallest well-formed ESP datagram: header, IV, an empty payload whose 2-byte trailer pads to 4, and the ICV. */
export const ESP_MIN_LENGTH = ESP_PAYLOAD_OFFSET + ESP_ALIGNMENT + ESP_ICV_LENGTH;

// ---- RFC 3948: UDP encapsulation of ESP ----
/** RFC 3948 §2.1 / RFC 3947: NAT-T port. */
export const ESP_IN_UDP_PORT = 4500;
/** RFC 3948 §2.2: four zero octets where an SPI would be mark a non-ESP (IKE) packet. */
export const NON_ESP_MARKER_LENGTH = 4;
/** RFC 3948 §2.3: a NAT-keepalive is a single 0xFF octet. */
export const NAT_KEEPALIVE_BYTE = 0xff;

// ---- Overhead and MTU ----
export const IPV4_HEADER_LENGTH = 20;
export const ETHERNET_HEADER_LENGTH = 14;
/** A container's IP packet on an encrypted network grows by at most this much on the underlay. */
export const ENCRYPTED_OVERHEAD =
  IPV4_HEADER_LENGTH +
  UDP_HEADER_LENGTH + // outer IPv4 + UDP 4500
  ESP_PAYLOAD_OFFSET + // SPI, seq, IV
  UDP_HEADER_LENGTH +
  VXLAN_HEADER_LENGTH +
  ETHERNET_HEADER_LENGTH + // protected inner UDP, VXLAN, Ethernet
  (ESP_ALIGNMENT - 1) +
  ESP_TRAILER_LENGTH + // worst-case padding and trailer
  ESP_ICV_LENGTH;
/** RFC 7348 §4: VXLAN over IPv4 adds 50 bytes. */
export const PLAIN_OVERHEAD = IPV4_HEADER_LENGTH + UDP_HEADER_LENGTH + VXLAN_HEADER_LENGTH + ETHERNET_HEADER_LENGTH;

/**
 * The container-facing MTU of an overlay (bridge, VXLAN device, container veths)
 * on an underlay of `underlayMtu` bytes: 1405 encrypted, 1450 plain on 1500. The
 * one place this is computed. Worst-case padding is assumed, so every packet up
 * to this size fits in one underlay packet, whatever its length modulo 4.
 */
export function overlayMtu(underlayMtu: number, encrypted: boolean): number {
  if (!Number.isInteger(underlayMtu) || underlayMtu < 576 || underlayMtu > 65_535) {
    throw new RangeError(`underlay MTU must be an integer in 576..65535, got ${underlayMtu}`);
  }
  return underlayMtu - (encrypted ? ENCRYPTED_OVERHEAD : PLAIN_OVERHEAD);
}

// ---- veil's local hand-over to the VTEP (never on the wire between hosts) ----
/**
 * The source port of every datagram the gateway delivers to the VTEP (169.254.x.1:1022 →
 * 169.254.x.2:4789). Below net.ipv4.ip_unprivileged_port_start (1024), so only a process with
 * CAP_NET_BIND_SERVICE can send from it; the vtep namespace's firewall accepts VXLAN from nothing
 * else (docs/plumbing.md "No local injection"). 1022 is IANA's "RFC3692-style Experiment 2"
 * (RFC 4727): no service listens on it.
 */
export const VTEP_DELIVERY_PORT = 1022;

/**
 * The port of every peer's gateway address: the local VTEP's FDB sends each peer's frames, still in
 * cleartext, to that peer's address at this port (docs/plumbing.md "Gateway addresses"). Privileged,
 * so no unprivileged process can bind it on any address. IANA's "RFC3692-style Experiment 1" (RFC 4727).
 */
export const VTEP_GATEWAY_PORT = 1021;
