/*
 * The records veil keeps in etcd and the Store interface the rest of veil uses
 * (keyrotation/ and api/ depend on this file only). Two implementations: etcd.ts
 * (the real one) and memory.ts (a fake with the same semantics for unit tests).
 *
 * Every listing carries the revision it was read at, so a caller can watch from
 * exactly there (docs/etcd.md "Watches"): list, then watch(prefix, revision + 1, ...).
 */

import type { KeyRange } from './layout.js';

export interface HostRecord {
  id: string;
  /** 1..16383, allocated once per host id by transaction; the SPI's sender field. */
  index: number;
  /** Underlay IPv4 address peers send ESP-in-UDP to. */
  address: string;
  os: string;
  arch: string;
  version: string;
  /** X25519 public key, 32 bytes as 64 hex digits. */
  publicKey: string;
  /** Random per process start (docs/keys.md "SA keys"). */
  incarnation: string;
}
export type HostRegistration = Omit<HostRecord, 'index'>;

export interface IpamConfig {
  /** IPv4 CIDR, e.g. 10.0.9.0/24. */
  subnet: string;
  /** Defaults to the first usable address of the subnet. */
  gateway: string;
  /** IPv4 CIDR inside the subnet that endpoints draw from; defaults to the subnet. */
  ipRange?: string;
}

export interface NetworkRecord {
  /** 64 hex digits, like Docker's network ids. */
  id: string;
  name: string;
  driver: 'overlay';
  vni: number;
  /** 0..65535, the SPI's network field. */
  index: number;
  encrypted: boolean;
  attachable: boolean;
  internal: boolean;
  labels: Record<string, string>;
  ipam: IpamConfig;
  options: Record<string, string>;
  /** ISO 8601. */
  created: string;
}

/** What createNetwork needs; the store assigns id (unless given), vni (unless requested), index and created. */
export interface NetworkSpec {
  id?: string;
  name: string;
  vni?: number;
  encrypted?: boolean;
  attachable?: boolean;
  internal?: boolean;
  labels?: Record<string, string>;
  ipam: { subnet: string; gateway?: string; ipRange?: string };
  options?: Record<string, string>;
}

export interface EndpointRecord {
  id: string;
  networkId: string;
  name: string;
  aliases: string[];
  hostId: string;
  mac: string;
  ipv4: string;
  /** Where the container's network namespace is, on its host (Docker's SandboxKey); absent for a record-only endpoint. */
  sandbox?: Sandbox;
  /** The interface name inside the container (eth0, eth1, ... in connect order, as Docker names them). */
  ifName?: string;
  /** The runtime that made it through a plugin and knows it by its own id (docs/cni.md "Records"). */
  runtime?: RuntimeRef;
}

/** An address reserved before its endpoint exists; `revision` tells two reservations of one address apart. */
export interface Reservation {
  ipv4: string;
  revision: number;
}

/** A CNI runtime's container (CNI_CONTAINERID): its DEL finds the endpoint by this id. */
export interface RuntimeRef {
  kind: 'cni';
  containerId: string;
}

/** A container's network namespace on its own host: a bind-mounted netns path, or a process id. */
export type Sandbox = { netns: string } | { pid: number };

/** What createEndpoint needs; the store allocates ipv4 unless requested, and derives mac (02:42:<ip>) unless given. */
export interface EndpointSpec {
  id?: string;
  networkId: string;
  name: string;
  aliases?: string[];
  hostId: string;
  mac?: string;
  ipv4?: string;
  sandbox?: Sandbox;
  ifName?: string;
  runtime?: RuntimeRef;
  /**
   * The address was reserved beforehand by this holder (reserveAddress, for IPAM plugins that hand out
   * an address before the endpoint exists): ipv4 is required and the reservation becomes the endpoint's.
   */
  reservedBy?: string;
}

export type EndpointChanges = Partial<Pick<EndpointRecord, 'name' | 'aliases' | 'sandbox' | 'ifName'>>;

export type EpochState = 'published' | 'active' | 'retired';

export interface KeyEpochRecord {
  networkId: string;
  epoch: number;
  state: EpochState;
  /** Milliseconds since the Unix epoch. */
  publishedAt: number;
  activatedAt?: number;
  retiredAt?: number;
  /** When the last copy was wrapped for a host that joined later: its ack timeout counts from here. */
  wrappedAt?: number;
  /**
   * How many member hosts the secret has been wrapped for. The copies are keys of their own
   * (layout.ts `copy`), each read by its host alone; this count changes with every rewrap, so a host
   * waiting for its copy sees the record change. 0 once retired: a retired epoch's copies are deleted.
   */
  copies: number;
}

/** hostId → the epoch secret wrapped for that host (crypto/keywrap.ts), base64. Never a plaintext key. */
export type WrappedCopies = Readonly<Record<string, string>>;

/** A wrapped copy's place: which host holds one for which epoch (its value stays in etcd). */
export interface CopyRef {
  networkId: string;
  epoch: number;
  hostId: string;
}

export interface AckRecord {
  networkId: string;
  epoch: number;
  hostId: string;
  incarnation: string;
  /** Milliseconds since the Unix epoch. */
  installedAt: number;
}

/** Any host asks for a rotation; the key-schedule leader activates an epoch newer than `afterEpoch`. */
export interface RotationRequestRecord {
  networkId: string;
  /** The epoch the requester saw sealing: keyed on epochs, not clocks, so a host whose clock lags is not ignored. */
  afterEpoch: number;
  /** Milliseconds since the Unix epoch; for logs. */
  requestedAt: number;
  by: string;
}

export interface Listing<T> {
  items: T[];
  /** The etcd revision the listing was read at; watch from revision + 1. */
  revision: number;
}

export interface RegisterOptions {
  /** The incarnation of this host's previous process, known to be gone (see Store.registerHost). */
  replaces?: string;
}

/** What a store client keeps open (GET /status `store`): each must end when what it stands for does. */
export interface StoreFigures {
  /** Watches of key ranges (the agent's, the API's replica, the key schedule's). */
  watches: number;
  /** Watches open to etcd: those inside the shared layout are one (docs/etcd.md "Watches"). */
  etcdWatches: number;
  /** Host leases kept alive: one while registered. */
  leases: number;
  /** Election campaigns not yet resigned: at most one per election. */
  campaigns: number;
}

export interface HostLease {
  readonly hostId: string;
  readonly index: number;
  /** Whether registering revoked the lease of the record `replaces` named. */
  readonly replaced: boolean;
  /** Aborted when the lease is lost (etcd unreachable past the TTL, or revoked): the host record is gone. */
  readonly lost: AbortSignal;
  /** Deletes the host record and every ack bound to it. */
  revoke(): Promise<void>;
}

/** Held by the elected leader. Every leader write takes it and is fenced on the leader key. */
export interface Leadership {
  readonly value: string;
  /**
   * Aborted (reason: StoreError VEIL_ERR_NOT_LEADER) when leadership ends for any reason: stop leader work now.
   * The store then also resigns the campaign itself; the holder should still resign() before campaigning again.
   */
  readonly lost: AbortSignal;
  onLost(listener: (reason: Error) => void): void;
  /** Leaves the election (its key goes). Idempotent; also after `lost`. */
  resign(): Promise<void>;
}

export interface LeaderElection {
  /** Resolves once elected. Rejects if `signal` aborts first or the campaign fails (its lease is lost). */
  campaign(value: string, opts?: { signal?: AbortSignal }): Promise<Leadership>;
  /** The current leader's value, if any. */
  leader(): Promise<string | undefined>;
  /** Calls onChange with the current leader and every change. */
  observe(onChange: (leader: string | undefined) => void): Promise<{ cancel(): Promise<void> }>;
}

export interface WatchEvent {
  type: 'put' | 'delete';
  /** Relative to the layout prefix (layout.ts parseKey reads it). */
  key: string;
  /** The decoded JSON value; for a delete, the value before deletion when known. */
  value: unknown;
  /** The revision of the change (events of one transaction share it). */
  revision: number;
}

export interface WatchHandler {
  /** Events in revision order, each exactly once. */
  onEvents(events: WatchEvent[]): void;
  /**
   * etcd compacted past the revision the watch needed: events were lost. `snapshot`
   * is the whole prefix as of `revision`; replace local state with it. Events after
   * `revision` follow through onEvents.
   */
  onResync(snapshot: Array<{ key: string; value: unknown }>, revision: number): void;
  /** Connection state, for status reporting; the watch keeps resuming by itself. */
  onDisconnected?(err: Error): void;
  /** The watch is attached again after onDisconnected (events missed meanwhile follow through onEvents). */
  onReconnected?(): void;
}

export interface WatchHandle {
  /** The last revision delivered (or the snapshot revision after a resync). */
  readonly lastRevision: number;
  cancel(): Promise<void>;
}

/** A host index and the host id it was given to (hostindex/<n>). */
export interface HostIndexClaim {
  readonly index: number;
  readonly hostId: string;
}

export interface Store {
  /**
   * Allocates (or finds) the host's index, writes hosts/<id> under a fresh lease kept alive. When every
   * index is claimed, frees the reclaimable ones first (reclaimHostIndexes).
   * Refused (VEIL_ERR_HOST_ID_IN_USE) while hosts/<id> is live: a duplicate id never takes over a live host.
   * The one exception is `replaces`: the incarnation of this host's own previous process, proven gone by
   * the caller (docs/etcd.md "Leases"). A live record carrying exactly that incarnation has its lease
   * revoked (its acks go with it, as when it expires) and the registration goes on.
   */
  registerHost(host: HostRegistration, ttlSeconds: number, options?: RegisterOptions): Promise<HostLease>;
  listHosts(): Promise<Listing<HostRecord>>;
  /**
   * Frees every host index whose host has no live record and which no key epoch names (docs/etcd.md
   * "Host indexes"), each in a transaction that fails if that changed meanwhile. Returns what it freed.
   */
  reclaimHostIndexes(): Promise<HostIndexClaim[]>;

  /** Claims name, VNI and network index and writes the record in one transaction. */
  createNetwork(spec: NetworkSpec): Promise<NetworkRecord>;
  getNetwork(idOrName: string): Promise<NetworkRecord>;
  listNetworks(): Promise<Listing<NetworkRecord>>;
  /** Refused (VEIL_ERR_NETWORK_HAS_ENDPOINTS) while endpoints exist; frees name, VNI, index, keys and acks. */
  deleteNetwork(idOrName: string): Promise<void>;

  /** Allocates an IPv4 (or takes the requested free one) and writes the endpoint in one transaction. */
  createEndpoint(spec: EndpointSpec): Promise<EndpointRecord>;
  listEndpoints(networkId?: string): Promise<Listing<EndpointRecord>>;
  /** Deletes the endpoint and frees its IP in one transaction. */
  deleteEndpoint(networkId: string, endpointId: string): Promise<void>;
  /**
   * What a runtime tells only after the endpoint exists (Docker: the container's name and aliases once
   * it joined, its namespace and interface name): the endpoint's address, MAC and host stay.
   */
  updateEndpoint(networkId: string, endpointId: string, changes: EndpointChanges): Promise<EndpointRecord>;
  /**
   * Takes an address (the requested one, or a free one) for `holder` before any endpoint exists
   * (Docker's IPAM asks for the address first); createEndpoint with reservedBy turns it into the
   * endpoint's. VEIL_ERR_IP_TAKEN when the requested address is taken, also by a reservation.
   */
  reserveAddress(networkId: string, holder: string, ipv4?: string): Promise<string>;
  /**
   * Frees an address `holder` reserved and no endpoint took; anything else is left alone (idempotent).
   * With `revision`, only that reservation (listReservations), not a newer one of the same address.
   */
  releaseAddress(networkId: string, ipv4: string, holder: string, revision?: number): Promise<void>;
  /** The addresses `holder` reserved on the network and no endpoint took (yet), by address. */
  listReservations(networkId: string, holder: string): Promise<Reservation[]>;

  /**
   * Leader write, fenced: fails with VEIL_ERR_NOT_LEADER (and ends `leader`) unless its leader key still exists,
   * and with VEIL_ERR_NOT_FOUND (leadership goes on) unless networks/<id> still exists.
   * Writes `copies` first (in transactions of at most COPIES_PER_TXN), then the record, so a host that
   * sees the record finds its copy. A published record written for the first time first deletes what an
   * unfinished publish of the same epoch left (only a publish is looked up for that: an active or retired
   * record is a rewrite); a retired one deletes the epoch's copies with it.
   */
  putEpoch(leader: Leadership, record: KeyEpochRecord, copies?: WrappedCopies): Promise<void>;
  /** Leader write, fenced like putEpoch; also deletes the epoch's copies and acks. */
  deleteEpoch(leader: Leadership, networkId: string, epoch: number): Promise<void>;
  getEpochs(networkId: string): Promise<Listing<KeyEpochRecord>>;
  /** One host's wrapped copy of an epoch's secret (base64), or null when it holds none. */
  getCopy(networkId: string, epoch: number, hostId: string): Promise<string | null>;
  /** Who holds a copy of which of the network's epochs (keys only: no copy leaves etcd). */
  listCopies(networkId: string): Promise<Listing<CopyRef>>;
  /** Written under the host's lease: the ack disappears with the host. */
  ack(host: HostLease, record: AckRecord): Promise<void>;
  listAcks(networkId: string, epoch: number): Promise<Listing<AckRecord>>;

  /** Any host. Writes rotate/<networkId> unless one with a larger afterEpoch is there; VEIL_ERR_NOT_FOUND for an unknown network. */
  requestRotation(request: RotationRequestRecord): Promise<void>;
  getRotationRequest(networkId: string): Promise<RotationRequestRecord | null>;

  election(name?: string, ttlSeconds?: number): LeaderElection;

  /**
   * Watches the keys under a prefix, or in [start, end) (relative, from layout.ts: `keys`, SHARED_RANGE),
   * from `fromRevision`, resuming after reconnects.
   */
  watch(keys: KeyRange, fromRevision: number, handler: WatchHandler): Promise<WatchHandle>;

  /** Every key and value under the layout prefix (tests, diagnostics). */
  dump(): Promise<Map<string, string>>;
  close(): Promise<void>;
}
