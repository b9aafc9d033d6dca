import {
  HOST_INDEX_BITS,
  HOST_INDEX_MAX,
  isHostIndex,
  isNetworkIndex,
  NETWORK_INDEX_BITS,
  NETWORK_INDEX_MAX,
} from '../../model/ids.js';
import { ESP_SPI_MIN } from './constants.js';

/*
 * SPIs that are unique at the receiver without per-packet coordination (docs/wire.md "SPI layout"):
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

/** The epoch field: epoch mod 4. */
export const SPI_EPOCH_BITS = 32 - HOST_INDEX_BITS - NETWORK_INDEX_BITS;

export interface SpiFields {
  epochMod4: number;
  senderIndex: number;
  networkIndex: number;
}

export function encodeSpi(epoch: number, senderIndex: number, networkIndex: number): number {
  if (!Number.isSafeInteger(epoch) || epoch < 0)
    throw new RangeError(`epoch must be a non-negative integer, got ${epoch}`);
  if (!isHostIndex(senderIndex)) throw new RangeError(`host index must be in 1..${HOST_INDEX_MAX}, got ${senderIndex}`);
  if (!isNetworkIndex(networkIndex))
    throw new RangeError(`network index must be in 0..${NETWORK_INDEX_MAX}, got ${networkIndex}`);
  // >= 2^16 > ESP_SPI_MIN, since host indexes start at 1
  return (
    ((epoch % 2 ** SPI_EPOCH_BITS) * 2 ** (HOST_INDEX_BITS + NETWORK_INDEX_BITS) +
      senderIndex * 2 ** NETWORK_INDEX_BITS +
      networkIndex) >>>
    0
  );
}

export function parseSpi(spi: number): SpiFields {
  return {
    epochMod4: spi >>> (HOST_INDEX_BITS + NETWORK_INDEX_BITS),
    senderIndex: (spi >>> NETWORK_INDEX_BITS) & HOST_INDEX_MAX,
    networkIndex: spi & NETWORK_INDEX_MAX,
  };
}

export function isValidSpi(spi: number): boolean {
  return Number.isInteger(spi) && spi >= ESP_SPI_MIN && spi <= 0xffffffff;
}
