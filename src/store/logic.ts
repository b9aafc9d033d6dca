/*
 * Pure rules shared by both Store implementations: validation, IPv4/CIDR arithmetic,
 * IP, VNI and index choice. No I/O, so etcd.ts and memory.ts cannot drift apart.
 */

import { randomBytes } from 'node:crypto';
import { cidrsOverlap, formatIpv4, overlaySubnetRefusal, parseCidr, parseIpv4, type Cidr } from '../model/ipv4.js';
import { StoreError } from './errors.js';
import { hexToBytes } from '../crypto/bytes.js';
import { isLowOrderPublicKey } from '../crypto/x25519.js';
import { SEGMENT_RE, parseKey } from './layout.js';
import { VNI_ALLOCATION_MIN, VNI_MAX } from '../model/ids.js';
import type {
  AckRecord,
  CopyRef,
  EndpointChanges,
  EndpointRecord,
  EndpointSpec,
  HostIndexClaim,
  HostRecord,
  HostRegistration,
  IpamConfig,
  KeyEpochRecord,
  WrappedCopies,
  NetworkRecord,
  NetworkSpec,
  RotationRequestRecord,
  Sandbox,
} from './types.js';

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const HEX32_RE = /^[0-9a-fA-F]{64}$/;
const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

function invalid(what: string): never {
  throw new StoreError('VEIL_ERR_REQUEST_INVALID', what);
}

export function newId(): string {
  return randomBytes(32).toString('hex');
}

/** A subnet or ip-range: a CIDR whose host bits are clear ("10.0.0.1/24" is ambiguous: refused). */
function parseNetwork(s: string): Cidr | undefined {
  const cidr = parseCidr(s);
  return cidr && cidr.address === cidr.first ? cidr : undefined;
}

/** Addresses endpoints may take: the ip-range (or subnet) minus network, broadcast and gateway. */
export interface AllocRange {
  first: number;
  last: number;
  exclude: Set<number>;
}

export function allocRange(ipam: IpamConfig): AllocRange {
  const subnet = parseNetwork(ipam.subnet);
  const range = ipam.ipRange ? parseNetwork(ipam.ipRange) : subnet;
  const gateway = parseIpv4(ipam.gateway);
  if (!subnet || !range || gateway === undefined) invalid(`ipam ${JSON.stringify(ipam)}`);
  return { first: range.first, last: range.last, exclude: new Set([subnet.first, subnet.last, gateway]) };
}

export function isAllocatable(r: AllocRange, ip: number): boolean {
  return ip >= r.first && ip <= r.last && !r.exclude.has(ip);
}

/** Counts allocatable addresses, stopping at `atLeast` (ranges can hold 2^24 addresses). */
function countAllocatable(r: AllocRange, atLeast: number): number {
  let n = 0;
  for (let ip = r.first; ip <= r.last && n < atLeast; ip++) if (!r.exclude.has(ip)) n++;
  return n;
}

/**
 * A free address: the lowest one on the first attempt (predictable, like Docker), a
 * random starting point on retries so concurrent allocators stop colliding. null
 * when the range is exhausted.
 */
export function pickFreeIp(r: AllocRange, taken: ReadonlySet<string>, attempt: number): string | null {
  const size = r.last - r.first + 1;
  const start = attempt === 0 ? 0 : Math.floor(Math.random() * size);
  for (let i = 0; i < size; i++) {
    const ip = r.first + ((start + i) % size);
    if (!r.exclude.has(ip) && !taken.has(formatIpv4(ip))) return formatIpv4(ip);
  }
  return null;
}

/** Lowest free integer in [min, max] (first attempt), else from a random starting point. */
export function pickFree(min: number, max: number, taken: ReadonlySet<number>, attempt: number): number | null {
  const size = max - min + 1;
  if (taken.size >= size) return null;
  const start = attempt === 0 ? 0 : Math.floor(Math.random() * size);
  for (let i = 0; i < size; i++) {
    const n = min + ((start + i) % size);
    if (!taken.has(n)) return n;
  }
  return null;
}

/**
 * The claims that may be freed for another host (docs/etcd.md "Host indexes"): the owner has no live
 * record (its lease ended) and holds no wrapped copy of any epoch in etcd (`named`). Epochs are what
 * SAs come from, so no host still holds an SA keyed with the owner's index, and no live host's SPIs or
 * keys can meet a new owner's.
 */
export function reclaimableHostIndexes(
  claims: readonly HostIndexClaim[],
  liveHosts: ReadonlySet<string>,
  named: ReadonlySet<string>,
): HostIndexClaim[] {
  return claims.filter((c) => !liveHosts.has(c.hostId) && !named.has(c.hostId));
}

/**
 * Wrapped copies per transaction: etcd refuses a transaction of more than --max-txn-ops operations
 * (128 by default), and a publish at 1,000 members writes 1,000 copies (docs/etcd.md "Scale").
 */
export const COPIES_PER_TXN = 100;

/** Whether a live host record (as stored) is the one `replaces` names: this host's own previous process. */
export function isReplaceableHost(storedRecord: string, replaces: string | undefined): boolean {
  if (replaces === undefined) return false;
  try {
    return (JSON.parse(storedRecord) as Partial<HostRecord>).incarnation === replaces;
  } catch {
    return false;
  }
}

export function macFromIpv4(ip: string): string {
  const n = parseIpv4(ip);
  if (n === undefined) invalid(`ip "${ip}"`);
  return [
    '02',
    '42',
    ...[n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].map((b) => b.toString(16).padStart(2, '0')),
  ].join(':');
}

function checkSegment(what: string, v: unknown): string {
  if (typeof v !== 'string' || !SEGMENT_RE.test(v)) invalid(`${what} must match ${SEGMENT_RE.source}`);
  return v;
}
function checkStringMap(what: string, v: unknown): Record<string, string> {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) invalid(`${what} must be an object of strings`);
  for (const x of Object.values(v)) if (typeof x !== 'string') invalid(`${what} must be an object of strings`);
  return { ...(v as Record<string, string>) };
}

/**
 * Validates a network spec and fills its defaults; checks the subnet against the
 * other networks. Everything but the uniqueness claims (name, VNI, index), which
 * the transaction makes.
 */
export function buildNetwork(
  spec: NetworkSpec,
  others: readonly NetworkRecord[],
  now: Date,
): Omit<NetworkRecord, 'vni' | 'index'> & { vni?: number } {
  const id = spec.id === undefined ? newId() : checkSegment('network id', spec.id);
  const name = checkSegment('network name', spec.name);
  if (spec.vni !== undefined && (!Number.isInteger(spec.vni) || spec.vni < VNI_ALLOCATION_MIN || spec.vni > VNI_MAX))
    invalid(`vni must be an integer in ${VNI_ALLOCATION_MIN}..${VNI_MAX}`);
  const ipamIn = spec.ipam;
  if (typeof ipamIn !== 'object' || ipamIn === null) invalid('ipam.subnet is required');
  const subnet = parseNetwork(ipamIn.subnet);
  if (!subnet) invalid(`ipam.subnet "${ipamIn.subnet}" is not an IPv4 CIDR`);
  const unusable = overlaySubnetRefusal(subnet);
  if (unusable) invalid(`ipam.subnet ${unusable}`);
  const gateway = ipamIn.gateway === undefined ? subnet.first + 1 : parseIpv4(ipamIn.gateway);
  if (gateway === undefined) invalid(`ipam.gateway "${ipamIn.gateway}" is not an IPv4 address`);
  if (gateway <= subnet.first || gateway >= subnet.last)
    invalid(`ipam.gateway ${formatIpv4(gateway)} is not a usable address of ${ipamIn.subnet}`);
  if (ipamIn.ipRange !== undefined) {
    const range = parseNetwork(ipamIn.ipRange);
    if (!range) invalid(`ipam.ipRange "${ipamIn.ipRange}" is not an IPv4 CIDR`);
    if (range.first < subnet.first || range.last > subnet.last)
      invalid(`ipam.ipRange ${ipamIn.ipRange} is not inside ${ipamIn.subnet}`);
  }
  const ipam: IpamConfig = {
    subnet: ipamIn.subnet,
    gateway: formatIpv4(gateway),
    ...(ipamIn.ipRange !== undefined ? { ipRange: ipamIn.ipRange } : {}),
  };
  if (countAllocatable(allocRange(ipam), 2) < 2) invalid(`ipam leaves room for fewer than two endpoints`);
  for (const o of others) {
    const os = parseNetwork(o.ipam.subnet);
    if (os && cidrsOverlap(os, subnet))
      throw new StoreError(
        'VEIL_ERR_SUBNET_OVERLAP',
        `${ipamIn.subnet} overlaps ${o.ipam.subnet} of network ${o.name}`,
      );
  }
  return {
    id,
    name,
    driver: 'overlay',
    ...(spec.vni !== undefined ? { vni: spec.vni } : {}),
    encrypted: spec.encrypted ?? false,
    attachable: spec.attachable ?? false,
    internal: spec.internal ?? false,
    labels: checkStringMap('labels', spec.labels),
    ipam,
    options: checkStringMap('options', spec.options),
    created: now.toISOString(),
  };
}

/** Validates an endpoint spec against its network; returns the requested IP (if any) as a number. */
/** The endpoint with `changes` applied, checked as createEndpoint checks a new one. */
export function changedEndpoint(ep: EndpointRecord, changes: EndpointChanges, network: NetworkRecord): EndpointRecord {
  const next: EndpointRecord = { ...ep, ...changes, aliases: [...(changes.aliases ?? ep.aliases)] };
  checkEndpoint({ ...next, reservedBy: undefined }, network);
  return next;
}

/** The value of ipam/<net>/<ip> while `holder` reserved it and no endpoint holds it (an endpoint's value is its id). */
export function addressReservation(holder: string): string {
  return `reserved:${checkSegment('reservation holder', holder)}`;
}

/** A CNI container id (CNI spec: "alphanumeric, underscore, period, hyphen"). */
export const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$/;

export function checkEndpoint(
  spec: EndpointSpec,
  network: NetworkRecord,
): { id: string; requestedIp: string | undefined } {
  const id = spec.id === undefined ? newId() : checkSegment('endpoint id', spec.id);
  checkSegment('host id', spec.hostId);
  if (typeof spec.name !== 'string' || spec.name.length === 0 || spec.name.length > 255)
    invalid('endpoint name must be 1..255 characters');
  if (
    spec.aliases !== undefined &&
    (!Array.isArray(spec.aliases) || spec.aliases.some((a) => typeof a !== 'string' || a.length === 0))
  )
    invalid('aliases must be non-empty strings');
  if (spec.mac !== undefined && !MAC_RE.test(spec.mac)) invalid(`mac "${spec.mac}" must be six lower-case hex bytes`);
  // The I/G bit (IEEE 802, first octet bit 0) marks group addresses: a container's MAC must be unicast.
  if (spec.mac !== undefined && ((parseInt(spec.mac.slice(0, 2), 16) & 1) === 1 || spec.mac === '00:00:00:00:00:00'))
    invalid(`mac ${spec.mac} is not a unicast address`);
  if (spec.ipv4 !== undefined) {
    const ip = parseIpv4(spec.ipv4);
    if (ip === undefined) invalid(`ipv4 "${spec.ipv4}" is not an IPv4 address`);
    const subnet = parseNetwork(network.ipam.subnet)!;
    if (ip < subnet.first || ip > subnet.last) invalid(`ipv4 ${spec.ipv4} is not in ${network.ipam.subnet}`);
    const r = allocRange({ ...network.ipam, ipRange: undefined });
    if (r.exclude.has(ip)) invalid(`ipv4 ${spec.ipv4} is the network, broadcast or gateway address`);
  }
  if (spec.reservedBy !== undefined) {
    addressReservation(spec.reservedBy);
    if (spec.ipv4 === undefined) invalid('an endpoint on a reserved address needs that address (ipv4)');
  }
  if (spec.sandbox !== undefined) checkSandbox(spec.sandbox);
  if (
    spec.runtime !== undefined &&
    (spec.runtime.kind !== 'cni' || !CONTAINER_ID_RE.test(String(spec.runtime.containerId)))
  )
    invalid('runtime must be {kind: "cni", containerId: 1..255 letters, digits, "_", "." or "-"}');
  if (spec.ifName !== undefined && !/^[a-z][a-z0-9]{0,14}$/.test(spec.ifName))
    invalid(`interface name "${spec.ifName}" must be 1..15 lower-case letters and digits`);
  return { id, requestedIp: spec.ipv4 };
}

function checkSandbox(sandbox: Sandbox): void {
  if ('netns' in sandbox) {
    if (
      typeof sandbox.netns !== 'string' ||
      !sandbox.netns.startsWith('/') ||
      sandbox.netns.length > 4096 ||
      sandbox.netns.includes('\0')
    )
      invalid('sandbox netns must be an absolute path');
  } else if (!('pid' in sandbox) || !Number.isInteger(sandbox.pid) || sandbox.pid < 1) {
    invalid('sandbox must be {netns: absolute path} or {pid: positive integer}');
  }
}

export function checkRotationRequest(r: RotationRequestRecord): void {
  checkSegment('network id', r.networkId);
  if (!Number.isSafeInteger(r.afterEpoch) || r.afterEpoch < 0) invalid('afterEpoch must be a non-negative integer');
  if (!Number.isFinite(r.requestedAt)) invalid('requestedAt must be a number of milliseconds');
  if (typeof r.by !== 'string' || r.by.length === 0 || r.by.length > 255) invalid('by must be 1..255 characters');
}

export function checkHost(h: HostRegistration, ttlSeconds: number): void {
  checkSegment('host id', h.id);
  if (parseIpv4(h.address) === undefined) invalid(`host address "${h.address}" is not an IPv4 address`);
  if (!HEX32_RE.test(h.publicKey)) invalid('host publicKey must be 32 bytes of hex');
  if (isLowOrderPublicKey(hexToBytes(h.publicKey)))
    invalid('host publicKey is a low-order X25519 point: no secret can be agreed with it (RFC 7748 §6.1)');
  for (const k of ['os', 'arch', 'version', 'incarnation'] as const)
    if (typeof h[k] !== 'string' || h[k].length === 0) invalid(`host ${k} must be a non-empty string`);
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) invalid('lease TTL must be a positive integer of seconds');
}

export function checkEpoch(r: KeyEpochRecord): void {
  checkSegment('network id', r.networkId);
  if (!Number.isSafeInteger(r.epoch) || r.epoch < 0) invalid('epoch must be a non-negative integer');
  if (!['published', 'active', 'retired'].includes(r.state)) invalid(`epoch state "${String(r.state)}"`);
  if (!Number.isSafeInteger(r.copies) || r.copies < 0) invalid('copies must be a non-negative integer');
  if (r.state === 'retired' && r.copies !== 0) invalid('a retired epoch holds no copies');
  if ('wrapped' in r) invalid('an epoch record holds no wrapped secrets (they are keys of their own)');
}

/** The copy a ~/copies/ key names; null for any other key. */
export function copyRef(key: string): CopyRef | null {
  const k = parseKey(key);
  if (k?.kind !== 'copy' || !Number.isSafeInteger(k.epoch)) return null;
  return { networkId: k.networkId, epoch: k.epoch, hostId: k.hostId };
}

/** A copy's value as stored: { wrapped: base64 }. */
export function isWrappedCopy(v: unknown): v is { wrapped: string } {
  return typeof v === 'object' && v !== null && typeof (v as { wrapped?: unknown }).wrapped === 'string';
}

export function checkCopies(copies: WrappedCopies): void {
  for (const [host, w] of Object.entries(copies)) {
    checkSegment('host id', host);
    if (typeof w !== 'string' || !BASE64_RE.test(w)) invalid(`wrapped secret for ${host} must be base64`);
  }
}

export function checkAck(r: AckRecord, hostId: string): void {
  checkSegment('network id', r.networkId);
  if (!Number.isSafeInteger(r.epoch) || r.epoch < 0) invalid('epoch must be a non-negative integer');
  if (r.hostId !== hostId) invalid(`ack for host ${r.hostId} written under host ${hostId}'s lease`);
}
