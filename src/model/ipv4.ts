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

/** Orders dotted quads by value (10.0.0.9 before 10.0.0.10); text that is no address sorts last. */
export function compareIpv4(a: string, b: string): number {
  return (parseIpv4(a) ?? 2 ** 32) - (parseIpv4(b) ?? 2 ** 32);
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

/**
 * IPv4 ranges an overlay's subnet must not touch, with why (the special-purpose registry, RFC 6890):
 * containers could not use such addresses as ordinary unicast, or veil uses them itself.
 */
const NOT_FOR_OVERLAYS: ReadonlyArray<{ cidr: string; why: string }> = [
  { cidr: '0.0.0.0/8', why: '"this network" (RFC 1122 §3.2.1.3): no host may use it as a source or destination' },
  { cidr: '127.0.0.0/8', why: 'loopback (RFC 1122 §3.2.1.3): it never leaves a host' },
  {
    cidr: '169.254.0.0/16',
    why: 'link-local (RFC 3927): it is not routed, and veil uses it between the host and its vtep namespace and for the resolver',
  },
  { cidr: '224.0.0.0/4', why: 'multicast (RFC 5771): group addresses, not hosts' },
  { cidr: '240.0.0.0/4', why: 'reserved (RFC 1112 §4), with the limited broadcast 255.255.255.255 (RFC 919)' },
];

/** Why `subnet` cannot be an overlay's subnet, or undefined when it can. */
export function overlaySubnetRefusal(subnet: Cidr): string | undefined {
  for (const range of NOT_FOR_OVERLAYS) {
    if (cidrsOverlap(subnet, parseCidr(range.cidr)!)) {
      const all = subnet.prefixLength === 0 ? ' (it covers every address)' : '';
      return `${formatIpv4(subnet.first)}/${subnet.prefixLength} overlaps ${range.cidr}${all}, ${range.why}`;
    }
  }
  return undefined;
}
