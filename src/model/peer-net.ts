import { formatIpv4, parseIpv4 } from './ipv4.js';
import { HOST_INDEX_BITS, HOST_INDEX_MAX, HOST_INDEX_MIN } from './ids.js';

/*
 * The peer net: one link-local address per peer host, its **gateway address**, at which the local
 * VTEP hands the gateway that peer's frames (docs/plumbing.md "Gateway addresses"). Peer i's is the
 * net's address + i, so the net is a /18: host indexes are 14 bits (docs/wire.md "SPI layout").
 */

export const PEER_NET_PREFIX_LENGTH = 32 - HOST_INDEX_BITS;
export const DEFAULT_PEER_NET = '169.254.64.0';
const SIZE = 2 ** HOST_INDEX_BITS;

/**
 * The link-local /18s (RFC 3927) a peer net may be: 169.254.0.0/18 holds the reserved first /24 and
 * veil's resolver, 169.254.128.0/18 the cloud metadata address 169.254.169.254.
 */
export const PEER_NETS = ['169.254.64.0', '169.254.192.0'] as const;

/** Why `text` cannot be a peer net, or undefined. */
export function peerNetRefusal(text: string): string | undefined {
  if ((PEER_NETS as readonly string[]).includes(text)) return undefined;
  return `the peer net must be ${PEER_NETS.join(' or ')} (a /${PEER_NET_PREFIX_LENGTH}), got ${text}`;
}

/** Whether `address` lies in the peer net `peerNet` (a valid one). */
export function inPeerNet(peerNet: string, address: string): boolean {
  const base = parseIpv4(peerNet)!;
  const a = parseIpv4(address);
  return a !== undefined && a >= base && a < base + SIZE;
}

/** Peer `index`'s gateway address in `peerNet`. */
export function gatewayAddress(peerNet: string, index: number): string {
  if (!Number.isInteger(index) || index < HOST_INDEX_MIN || index > HOST_INDEX_MAX)
    throw new RangeError(`host index must be in ${HOST_INDEX_MIN}..${HOST_INDEX_MAX}, got ${index}`);
  return formatIpv4(parseIpv4(peerNet)! + index);
}
