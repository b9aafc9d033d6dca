/*
 * The one IPv4 and CIDR parser. Addresses are dotted quads in canonical decimal (no leading zeros,
 * which inet_aton would read as octal); values are unsigned 32-bit numbers. Parsers return
 * undefined on bad input: each caller says what the refusal means in its own terms.
 */

const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const p of parts) {
    if (!OCTET.test(p)) return undefined;
    value = value * 256 + Number(p);
  }
  return value;
}

export function isIpv4(text: string): boolean {
  return parseIpv4(text) !== undefined;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff].join('.');
}

/** An IPv4 prefix: the address as written, and the network it names. */
export interface Cidr {
  /** The address before the slash. */
  readonly address: number;
  readonly prefixLength: number;
  /** The network address (host bits cleared). */
  readonly first: number;
  /** The broadcast address. */
  readonly last: number;
}

/** "A.B.C.D/N". Host bits may be set ("10.0.0.5/24"); callers that need a network address compare address and first. */
export function parseCidr(text: string): Cidr | undefined {
  const [addr, len, extra] = text.split('/');
  if (addr === undefined || len === undefined || extra !== undefined || !/^(3[0-2]|[12]?\d)$/.test(len))
    return undefined;
  const address = parseIpv4(addr);
  if (address === undefined) return undefined;
  const prefixLength = Number(len);
  const size = 2 ** (32 - prefixLength);
  const first = address - (address % size);
  return { address, prefixLength, first, last: first + size - 1 };
}

export function cidrContains(cidr: Cidr, address: number): boolean {
  return address >= cidr.first && address <= cidr.last;
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.first <= b.last && b.first <= a.last;
}
