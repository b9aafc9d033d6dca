import { ESP_SPI_MIN } from './constants.js';

/*
 * SPIs that are unique at the receiver without per-packet coordination (DESIGN "Keys"):
 *
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |E E|  sender host index (14 bits) |   network index (16 bits)   |
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   E = epoch mod 4: at most three epochs are live (previous, current, next), so
 *   their SPIs never collide. Host indexes start at 1, so every SPI is at least
 *   2^16, above the reserved range 0-255 (RFC 4303 §2.1) and never the RFC 3948
 *   non-ESP marker 0.
 */

export const SPI_EPOCH_BITS = 2;
export const SPI_HOST_BITS = 14;
export const SPI_NETWORK_BITS = 16;
export const SPI_HOST_INDEX_MAX = 2 ** SPI_HOST_BITS - 1;
export const SPI_NETWORK_INDEX_MAX = 2 ** SPI_NETWORK_BITS - 1;

export interface SpiFields {
  epochMod4: number;
  senderIndex: number;
  networkIndex: number;
}

export function encodeSpi(epoch: number, senderIndex: number, networkIndex: number): number {
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new RangeError(`epoch must be a non-negative integer, got ${epoch}`);
  if (!Number.isInteger(senderIndex) || senderIndex < 1 || senderIndex > SPI_HOST_INDEX_MAX) {
    throw new RangeError(`host index must be in 1..${SPI_HOST_INDEX_MAX}, got ${senderIndex}`);
  }
  if (!Number.isInteger(networkIndex) || networkIndex < 0 || networkIndex > SPI_NETWORK_INDEX_MAX) {
    throw new RangeError(`network index must be in 0..${SPI_NETWORK_INDEX_MAX}, got ${networkIndex}`);
  }
  const spi = ((epoch % 4) * 2 ** 30 + senderIndex * 2 ** 16 + networkIndex) >>> 0;
  return spi; // >= 2^16 > ESP_SPI_MIN
}

export function parseSpi(spi: number): SpiFields {
  return {
    epochMod4: spi >>> 30,
    senderIndex: (spi >>> 16) & SPI_HOST_INDEX_MAX,
    networkIndex: spi & SPI_NETWORK_INDEX_MAX,
  };
}

export function isValidSpi(spi: number): boolean {
  return Number.isInteger(spi) && spi >= ESP_SPI_MIN && spi <= 0xffffffff;
}
