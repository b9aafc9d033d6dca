/*
 * Identifier ranges every part of veil agrees on. The SPI carries a host index and a network
 * index (docs/wire.md "SPI layout"), so their widths bound how many hosts and networks exist;
 * etcd allocates both (docs/etcd.md "Key layout"), the data plane reads them from the SPI.
 */

/** Bits of the SPI for the sender's host index and for the network index. */
export const HOST_INDEX_BITS = 14;
export const NETWORK_INDEX_BITS = 16;

/** Host indexes start at 1, so every SPI is at least 2^16 (never reserved, never the non-ESP marker). */
export const HOST_INDEX_MIN = 1;
export const HOST_INDEX_MAX = 2 ** HOST_INDEX_BITS - 1;
export const NETWORK_INDEX_MIN = 0;
export const NETWORK_INDEX_MAX = 2 ** NETWORK_INDEX_BITS - 1;

/** RFC 7348 §5: the VNI is 24 bits. */
export const VNI_MAX = 0xffffff;
/** Where veil allocates VNIs from, as Docker's overlay driver does (libnetwork ovmanager). */
export const VNI_ALLOCATION_MIN = 4096;

export function isHostIndex(n: number): boolean {
  return Number.isInteger(n) && n >= HOST_INDEX_MIN && n <= HOST_INDEX_MAX;
}

export function isNetworkIndex(n: number): boolean {
  return Number.isInteger(n) && n >= NETWORK_INDEX_MIN && n <= NETWORK_INDEX_MAX;
}

/** Any value the 24-bit field can carry. */
export function isVni(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= VNI_MAX;
}
