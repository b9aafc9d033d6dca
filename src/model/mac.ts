/** A MAC address as veil writes it: six lower-case hex bytes separated by colons. */
export const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export const ZERO_MAC = '00:00:00:00:00:00';

/** IEEE 802: the I/G bit (bit 0 of the first octet) marks group addresses; all-zero is no address. */
export function isUnicastMac(mac: string): boolean {
  return MAC_RE.test(mac) && (parseInt(mac.slice(0, 2), 16) & 1) === 0 && mac !== ZERO_MAC;
}
