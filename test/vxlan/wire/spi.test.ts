import { describe, expect, it } from 'vitest';
import { ESP_SPI_MIN } from '../../../src/vxlan/wire/constants.js';
import { HOST_INDEX_MAX, NETWORK_INDEX_MAX } from '../../../src/model/ids.js';
import { encodeSpi, isValidSpi, parseSpi } from '../../../src/vxlan/wire/spi.js';

describe('SPI scheme: epoch mod 4 | sender index | network index', () => {
  it('round-trips its fields and is never below 256', () => {
    for (const [epoch, sender, network] of [
      [0, 1, 0],
      [5, 2, 7],
      [1_000_003, HOST_INDEX_MAX, NETWORK_INDEX_MAX],
    ] as const) {
      const spi = encodeSpi(epoch, sender, network);
      expect(parseSpi(spi)).toEqual({ epochMod4: epoch % 4, senderIndex: sender, networkIndex: network });
      expect(spi).toBeGreaterThanOrEqual(ESP_SPI_MIN);
      expect(isValidSpi(spi)).toBe(true);
    }
  });

  it('three consecutive epochs of one sender and network never share an SPI', () => {
    for (let e = 0; e < 8; e++) expect(new Set([e, e + 1, e + 2].map((x) => encodeSpi(x, 9, 4))).size).toBe(3);
  });

  it('refuses host index 0 and out-of-range fields', () => {
    expect(() => encodeSpi(0, 0, 0)).toThrow(RangeError);
    expect(() => encodeSpi(0, HOST_INDEX_MAX + 1, 0)).toThrow(RangeError);
    expect(() => encodeSpi(0, 1, NETWORK_INDEX_MAX + 1)).toThrow(RangeError);
    expect(() => encodeSpi(-1, 1, 0)).toThrow(RangeError);
  });
});
