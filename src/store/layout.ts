/*
 * The etcd key layout (docs/etcd.md "Key layout"). Every key below is relative to
 * PREFIX; the etcd client is namespaced to it, so no other file spells a key.
 *
 *   hosts/<hostId>                        HostRecord, bound to the host's lease
 *   networks/<id>                         NetworkRecord
 *   names/<name>                          network id      (name uniqueness)
 *   vnis/<vni>                            network id      (VNI uniqueness)
 *   endpoints/<networkId>/<endpointId>    EndpointRecord
 *   ipam/<networkId>/<ip>                 endpoint id     (one transaction allocates), or reserved:<hostId>
 *   keys/<networkId>/<epoch>              KeyEpochRecord  (state and times; no key material)
 *   rotate/<networkId>                    RotationRequestRecord
 *   election/keyschedule/<leaseId>        etcd3's election keys (leader = lowest create revision)
 *   hostindex/<n>                         host id, n in 1..16383 (SPI sender field), freed once its host is gone for good
 *   netindex/<n>                          network id, n in 0..65535 (SPI network field), freed with the network
 *   ~/copies/<networkId>/<epoch>/<hostId> WrappedCopy: the epoch secret wrapped for that host
 *   ~/acks/<networkId>/<epoch>/<hostId>   AckRecord, bound to the host's lease
 *
 * What grows with hosts per epoch (a copy and an ack per member) sits under "~/", which sorts after
 * every other key: the whole-layout watches (agent, API replica) cover SHARED_RANGE, one range that
 * leaves it out, so a rotation costs each host its own copy, not everyone's (docs/etcd.md "Scale").
 */

export const PREFIX = '/veil/v1/';

export const KEYSCHEDULE_ELECTION = 'keyschedule';

/** Per-member keys of each epoch: after every other key in byte order ('~' is 0x7e). */
const PER_MEMBER = '~/';

/** Every key under a prefix, or the keys in [start, end) in byte order. */
export type KeyRange = string | { readonly start: string; readonly end: string };

/** Every key but the per-member ones: what a watch of the whole layout covers. */
export const SHARED_RANGE: KeyRange = { start: '', end: PER_MEMBER };

export function inKeyRange(range: KeyRange, key: string): boolean {
  if (typeof range === 'string') return key.startsWith(range);
  const k = Buffer.from(key);
  return Buffer.compare(k, Buffer.from(range.start)) >= 0 && Buffer.compare(k, Buffer.from(range.end)) < 0;
}

/** Ids and names become key segments: no '/', nothing empty. */
export const SEGMENT_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

function seg(what: string, v: string): string {
  if (!SEGMENT_RE.test(v)) throw new RangeError(`${what} "${v}" cannot be a key segment`);
  return v;
}
function num(what: string, v: number): string {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${what} must be a non-negative integer`);
  return String(v);
}

/** ~/<kind>/, ~/<kind>/<networkId>/ or ~/<kind>/<networkId>/<epoch>/. */
function perEpoch(kind: 'copies' | 'acks', networkId?: string, epoch?: number): string {
  if (networkId === undefined) return `${PER_MEMBER}${kind}/`;
  const net = `${PER_MEMBER}${kind}/${seg('network id', networkId)}/`;
  return epoch === undefined ? net : `${net}${num('epoch', epoch)}/`;
}

export const keys = {
  hostsPrefix: (): string => 'hosts/',
  host: (hostId: string): string => `hosts/${seg('host id', hostId)}`,

  networksPrefix: (): string => 'networks/',
  network: (id: string): string => `networks/${seg('network id', id)}`,
  name: (name: string): string => `names/${seg('network name', name)}`,
  vnisPrefix: (): string => 'vnis/',
  vni: (vni: number): string => `vnis/${num('vni', vni)}`,

  endpointsPrefix: (networkId?: string): string =>
    networkId === undefined ? 'endpoints/' : `endpoints/${seg('network id', networkId)}/`,
  endpoint: (networkId: string, endpointId: string): string =>
    `endpoints/${seg('network id', networkId)}/${seg('endpoint id', endpointId)}`,

  ipamPrefix: (networkId: string): string => `ipam/${seg('network id', networkId)}/`,
  ipam: (networkId: string, ip: string): string => `ipam/${seg('network id', networkId)}/${seg('ip', ip)}`,

  keysPrefix: (networkId?: string): string =>
    networkId === undefined ? 'keys/' : `keys/${seg('network id', networkId)}/`,
  keyEpoch: (networkId: string, epoch: number): string => `keys/${seg('network id', networkId)}/${num('epoch', epoch)}`,

  copiesPrefix: (networkId?: string, epoch?: number): string => perEpoch('copies', networkId, epoch),
  copy: (networkId: string, epoch: number, hostId: string): string =>
    `${perEpoch('copies', networkId, epoch)}${seg('host id', hostId)}`,

  acksPrefix: (networkId?: string, epoch?: number): string => perEpoch('acks', networkId, epoch),
  ack: (networkId: string, epoch: number, hostId: string): string =>
    `${perEpoch('acks', networkId, epoch)}${seg('host id', hostId)}`,

  rotatePrefix: (): string => 'rotate/',
  rotate: (networkId: string): string => `rotate/${seg('network id', networkId)}`,

  electionPrefix: (name: string = KEYSCHEDULE_ELECTION): string => `election/${seg('election', name)}/`,

  hostIndexPrefix: (): string => 'hostindex/',
  hostIndex: (n: number): string => `hostindex/${num('host index', n)}`,
  netIndexPrefix: (): string => 'netindex/',
  netIndex: (n: number): string => `netindex/${num('network index', n)}`,
} as const;

/** What a key (relative to PREFIX) names: lets watchers route events without string surgery. */
export type ParsedKey =
  | { kind: 'host'; hostId: string }
  | { kind: 'network'; networkId: string }
  | { kind: 'name'; name: string }
  | { kind: 'vni'; vni: number }
  | { kind: 'endpoint'; networkId: string; endpointId: string }
  | { kind: 'ipam'; networkId: string; ip: string }
  | { kind: 'keyEpoch'; networkId: string; epoch: number }
  | { kind: 'copy'; networkId: string; epoch: number; hostId: string }
  | { kind: 'ack'; networkId: string; epoch: number; hostId: string }
  | { kind: 'rotate'; networkId: string }
  | { kind: 'election'; name: string; candidate: string }
  | { kind: 'hostIndex'; index: number }
  | { kind: 'netIndex'; index: number };

export function parseKey(key: string): ParsedKey | null {
  if (key.startsWith(PER_MEMBER)) return parsePerMember(key.slice(PER_MEMBER.length).split('/'));
  const p = key.split('/');
  const [a, b, c] = p;
  if (b === undefined || b === '') return null;
  switch (a) {
    case 'hosts':
      return p.length === 2 ? { kind: 'host', hostId: b } : null;
    case 'networks':
      return p.length === 2 ? { kind: 'network', networkId: b } : null;
    case 'names':
      return p.length === 2 ? { kind: 'name', name: b } : null;
    case 'vnis':
      return p.length === 2 ? { kind: 'vni', vni: Number(b) } : null;
    case 'endpoints':
      return p.length === 3 && c ? { kind: 'endpoint', networkId: b, endpointId: c } : null;
    case 'ipam':
      return p.length === 3 && c ? { kind: 'ipam', networkId: b, ip: c } : null;
    case 'keys':
      return p.length === 3 && c ? { kind: 'keyEpoch', networkId: b, epoch: Number(c) } : null;
    case 'rotate':
      return p.length === 2 ? { kind: 'rotate', networkId: b } : null;
    case 'election':
      return p.length === 3 && c ? { kind: 'election', name: b, candidate: c } : null;
    case 'hostindex':
      return p.length === 2 ? { kind: 'hostIndex', index: Number(b) } : null;
    case 'netindex':
      return p.length === 2 ? { kind: 'netIndex', index: Number(b) } : null;
    default:
      return null;
  }
}

function parsePerMember(p: string[]): ParsedKey | null {
  const [kind, networkId, epoch, hostId] = p;
  if (p.length !== 4 || !networkId || !epoch || !hostId) return null;
  if (kind === 'copies') return { kind: 'copy', networkId, epoch: Number(epoch), hostId };
  if (kind === 'acks') return { kind: 'ack', networkId, epoch: Number(epoch), hostId };
  return null;
}

/** The first key after every key that starts with `prefix` (etcd's range_end for a prefix). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}
