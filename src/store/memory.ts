/*
 * An in-memory Store for unit tests, with etcd's semantics where veil relies on them:
 * one revision per change set, create/mod revisions, leases that expire TTL after
 * their client stops keeping them alive, elections by lowest create revision, watches
 * from a revision with replay, and compaction (which turns a watch into a resync).
 *
 * A MemoryBackend is the "cluster"; each MemoryStore is a client of it (one per
 * simulated host). Closing a client is a process dying: its leases stop being kept
 * alive and expire after their TTL. Every method body mutates synchronously after its
 * last await, so each change is atomic, as a transaction is in etcd.
 */

import { StoreError } from './errors.js';
import { compareIpv4 } from '../model/ipv4.js';
import { KEYSCHEDULE_ELECTION, SEGMENT_RE, inKeyRange, keys, type KeyRange } from './layout.js';
import {
  HOST_INDEX_MAX,
  HOST_INDEX_MIN,
  NETWORK_INDEX_MAX,
  NETWORK_INDEX_MIN,
  VNI_ALLOCATION_MIN,
  VNI_MAX,
} from '../model/ids.js';
import {
  addressReservation,
  allocRange,
  changedEndpoint,
  buildNetwork,
  COPIES_PER_TXN,
  checkAck,
  checkCopies,
  checkEndpoint,
  checkEpoch,
  copyRef,
  isWrappedCopy,
  checkHost,
  checkRotationRequest,
  isReplaceableHost,
  macFromIpv4,
  pickFree,
  reclaimableHostIndexes,
  pickFreeIp,
} from './logic.js';
import type {
  AckRecord,
  CopyRef,
  EndpointChanges,
  EndpointRecord,
  EndpointSpec,
  HostIndexClaim,
  HostLease,
  HostRecord,
  Reservation,
  HostRegistration,
  KeyEpochRecord,
  WrappedCopies,
  Leadership,
  LeaderElection,
  Listing,
  NetworkRecord,
  NetworkSpec,
  RegisterOptions,
  Store,
  WatchEvent,
  WatchHandle,
  WatchHandler,
  RotationRequestRecord,
} from './types.js';

interface Entry {
  value: string;
  create: number;
  mod: number;
  lease: number | undefined;
}

interface LoggedEvent {
  type: 'put' | 'delete';
  key: string;
  value: string | null;
  revision: number;
}

type Op = { put: string; value: string; lease?: number } | { del: string } | { delPrefix: string };

interface MemoryLease {
  id: number;
  ttlMs: number;
  owner: MemoryStore;
  keys: Set<string>;
  timer: NodeJS.Timeout | null;
  /** Election leases are revoked, not orphaned, when their client closes (EtcdStore resigns campaigns). */
  campaign: boolean;
  onLost: Array<() => void>;
}

/** Records are JSON; index keys and election keys hold bare strings. */
function decode(v: string | null): unknown {
  if (v === null || v === '') return null;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

export class MemoryBackend {
  private readonly kv = new Map<string, Entry>();
  private log: LoggedEvent[] = [];
  private compacted = 0;
  private rev = 1;
  private nextLease = 1;
  private readonly leases = new Map<number, MemoryLease>();
  private readonly watchers = new Set<MemoryWatch>();

  /** A client of this backend (one per simulated host or process). */
  client(options: MemoryClientOptions = {}): MemoryStore {
    return new MemoryStore(this, options);
  }

  get revision(): number {
    return this.rev;
  }

  get(key: string): Entry | undefined {
    return this.kv.get(key);
  }
  range(range: KeyRange): Array<[string, Entry]> {
    return [...this.kv].filter(([k]) => inKeyRange(range, k)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Applies ops as one revision and notifies watchers; returns the revision (unchanged if nothing changed). */
  commit(ops: Op[]): number {
    const events: LoggedEvent[] = [];
    const revision = this.rev + 1;
    for (const op of ops) {
      if ('put' in op) {
        const prev = this.kv.get(op.put);
        if (prev?.lease !== undefined) this.leases.get(prev.lease)?.keys.delete(op.put);
        this.kv.set(op.put, { value: op.value, create: prev?.create ?? revision, mod: revision, lease: op.lease });
        if (op.lease !== undefined) this.leases.get(op.lease)?.keys.add(op.put);
        events.push({ type: 'put', key: op.put, value: op.value, revision });
      } else {
        const doomed = 'del' in op ? (this.kv.has(op.del) ? [op.del] : []) : this.range(op.delPrefix).map(([k]) => k);
        for (const k of doomed) {
          const prev = this.kv.get(k)!;
          if (prev.lease !== undefined) this.leases.get(prev.lease)?.keys.delete(k);
          this.kv.delete(k);
          events.push({ type: 'delete', key: k, value: prev.value, revision });
        }
      }
    }
    if (events.length === 0) return this.rev;
    this.rev = revision;
    this.log.push(...events);
    for (const w of this.watchers) w.notify(events);
    return revision;
  }

  /** Drops history up to `revision`: watches from before it resync (etcd's compaction). */
  compact(revision: number): void {
    this.compacted = Math.max(this.compacted, revision);
    this.log = this.log.filter((e) => e.revision > revision);
  }
  get compactedRevision(): number {
    return this.compacted;
  }
  history(fromRevision: number): LoggedEvent[] {
    return this.log.filter((e) => e.revision >= fromRevision);
  }

  addWatcher(w: MemoryWatch): void {
    this.watchers.add(w);
  }
  removeWatcher(w: MemoryWatch): void {
    this.watchers.delete(w);
  }

  grantLease(owner: MemoryStore, ttlSeconds: number, campaign = false): MemoryLease {
    const lease: MemoryLease = {
      id: this.nextLease++,
      ttlMs: ttlSeconds * 1000,
      owner,
      keys: new Set(),
      timer: null,
      campaign,
      onLost: [],
    };
    this.leases.set(lease.id, lease);
    return lease;
  }
  leaseAlive(id: number): boolean {
    return this.leases.has(id);
  }
  revokeLease(id: number): void {
    const lease = this.leases.get(id);
    if (!lease) return;
    this.leases.delete(id);
    if (lease.timer) clearTimeout(lease.timer);
    this.commit([...lease.keys].map((k) => ({ del: k })));
    for (const f of lease.onLost) f();
  }
  /**
   * The owner stopped keeping its leases alive: they expire after their TTL. Closed (the process died
   * or stopped): its campaigns are resigned at once, as EtcdStore does; cut off (`resign: false`): they expire too.
   */
  orphanLeases(owner: MemoryStore, { resign = true }: { resign?: boolean } = {}): void {
    for (const lease of [...this.leases.values()]) {
      if (lease.owner !== owner || lease.timer) continue;
      if (lease.campaign && resign) {
        this.revokeLease(lease.id);
        continue;
      }
      lease.timer = setTimeout(() => this.revokeLease(lease.id), lease.ttlMs);
      lease.timer.unref();
    }
  }

  /** The owner keeps its leases alive again (reconnected): those that have not expired yet live on. */
  keepLeasesAlive(owner: MemoryStore): void {
    for (const lease of this.leases.values()) {
      if (lease.owner !== owner || !lease.timer) continue;
      clearTimeout(lease.timer);
      lease.timer = null;
    }
  }

  /** Every key and value (tests). */
  dump(): Map<string, string> {
    return new Map(this.range('').map(([k, e]) => [k, e.value]));
  }
}

/** setImmediate, or a timer when there is a delay (each keeps the order of what it schedules). */
function later(delayMs: number, fn: () => void): void {
  if (delayMs > 0) setTimeout(fn, delayMs);
  else setImmediate(fn);
}

class MemoryHostLease implements HostLease {
  private readonly ctl = new AbortController();
  constructor(
    private readonly backend: MemoryBackend,
    readonly hostId: string,
    readonly index: number,
    readonly leaseId: number,
    lease: MemoryLease,
    private readonly client: MemoryStore,
    readonly replaced: boolean,
  ) {
    lease.onLost.push(() => {
      if (!this.ctl.signal.aborted) this.ctl.abort(new StoreError('VEIL_ERR_STORE_UNAVAILABLE', 'host lease lost'));
    });
  }
  get lost(): AbortSignal {
    return this.ctl.signal;
  }
  /** As on etcd, only a connected client can revoke: a dead or cut-off process's lease expires after its TTL. */
  async revoke(): Promise<void> {
    this.client.ensureConnected();
    this.backend.revokeLease(this.leaseId);
  }
}

class MemoryLeadership implements Leadership {
  private readonly ctl = new AbortController();
  constructor(
    private readonly backend: MemoryBackend,
    readonly value: string,
    readonly leaseId: number,
    readonly fenceKey: string,
    readonly fenceRevision: number,
  ) {}
  get lost(): AbortSignal {
    return this.ctl.signal;
  }
  onLost(listener: (reason: Error) => void): void {
    if (this.ctl.signal.aborted) listener(this.ctl.signal.reason as Error);
    else this.ctl.signal.addEventListener('abort', () => listener(this.ctl.signal.reason as Error), { once: true });
  }
  /** Ends the leadership and, as EtcdLeadership does, resigns the campaign (its key leaves the election). Idempotent. */
  lose(detail: string): void {
    if (this.ctl.signal.aborted) return;
    this.ctl.abort(new StoreError('VEIL_ERR_NOT_LEADER', detail));
    this.backend.revokeLease(this.leaseId);
  }
  async resign(): Promise<void> {
    this.lose('resigned');
  }
}

/** What sets one client apart from another. */
export interface MemoryClientOptions {
  /**
   * How long this client's watches take to deliver a change (0: the next turn of the event loop). Real
   * clients see a change at different times; a skew between hosts shows what depends on their order.
   */
  readonly watchDelayMs?: number;
}

class MemoryWatch implements WatchHandle {
  private last: number;
  private cancelled = false;
  private queue: Array<{ event: LoggedEvent; due: number }> = [];
  private scheduled = false;

  constructor(
    private readonly backend: MemoryBackend,
    private readonly range: KeyRange,
    fromRevision: number,
    private readonly handler: WatchHandler,
    private readonly client: MemoryStore,
  ) {
    this.last = fromRevision - 1;
    backend.addWatcher(this);
    if (fromRevision > 0 && fromRevision <= backend.compactedRevision) {
      // Like etcd, the watch learns of the compaction after it is created: deliver asynchronously.
      setImmediate(() => this.resync());
    } else {
      this.notify(backend.history(fromRevision));
    }
  }

  get lastRevision(): number {
    return this.last;
  }

  private resync(): void {
    if (this.cancelled) return;
    this.queue = [];
    const revision = this.backend.revision;
    this.last = revision;
    this.handler.onResync(
      this.backend.range(this.range).map(([key, e]) => ({ key, value: decode(e.value) })),
      revision,
    );
  }

  notify(events: LoggedEvent[]): void {
    const mine = events.filter((e) => inKeyRange(this.range, e.key) && e.revision > this.last);
    if (mine.length === 0 || this.cancelled) return;
    const due = Date.now() + (this.client.options.watchDelayMs ?? 0);
    this.queue.push(...mine.map((event) => ({ event, due })));
    this.schedule();
  }

  /** A cut-off client's watch holds what happens and delivers it once reconnected, as an etcd watch resumes. */
  disconnected(err: Error): void {
    this.handler.onDisconnected?.(err);
  }

  reconnected(): void {
    this.handler.onReconnected?.();
    this.schedule();
  }

  /** Asynchronous like a real watch: a writer's await returns before its own watch fires. */
  schedule(): void {
    if (this.scheduled || this.queue.length === 0 || !this.client.connected) return;
    this.scheduled = true;
    later(this.queue[0]!.due - Date.now(), () => {
      this.scheduled = false;
      if (!this.client.connected) return;
      const now = Date.now();
      const ready = this.queue.findIndex((q) => q.due > now);
      const batch = this.queue
        .splice(0, ready < 0 ? this.queue.length : ready)
        .map((q) => q.event)
        .filter((e) => e.revision > this.last);
      if (this.cancelled) return;
      if (batch.length > 0) {
        this.last = batch[batch.length - 1]!.revision;
        this.handler.onEvents(
          batch.map((e): WatchEvent => ({ type: e.type, key: e.key, value: decode(e.value), revision: e.revision })),
        );
      }
      this.schedule();
    });
  }

  async cancel(): Promise<void> {
    this.cancelled = true;
    this.backend.removeWatcher(this);
  }
}

export class MemoryStore implements Store {
  private closed = false;
  private readonly watches = new Set<MemoryWatch>();

  constructor(
    readonly backend: MemoryBackend = new MemoryBackend(),
    readonly options: MemoryClientOptions = {},
  ) {}

  private cutOff = false;

  /** Neither closed nor cut off: calls reach the backend. */
  get connected(): boolean {
    return !this.closed && !this.cutOff;
  }

  /** Throws what a call of a closed or cut-off client rejects with. */
  ensureConnected(): void {
    if (this.closed) throw new StoreError('VEIL_ERR_STORE_UNAVAILABLE', 'store closed');
    if (this.cutOff) throw new StoreError('VEIL_ERR_STORE_UNAVAILABLE', 'etcd unreachable');
  }

  /**
   * Cuts this client off etcd (a partition between its host and the cluster) or reconnects it. While
   * cut off, every call rejects with VEIL_ERR_STORE_UNAVAILABLE, its watches hold what happens (and
   * deliver it on reconnection), and its leases are not kept alive: they expire after their TTL.
   */
  setReachable(reachable: boolean): void {
    if (this.closed || reachable === !this.cutOff) return;
    this.cutOff = !reachable;
    if (reachable) {
      this.backend.keepLeasesAlive(this);
      for (const w of this.watches) w.reconnected();
    } else {
      this.backend.orphanLeases(this, { resign: false });
      const err = new StoreError('VEIL_ERR_STORE_UNAVAILABLE', 'etcd unreachable');
      for (const w of this.watches) w.disconnected(err);
    }
  }

  private open(): void {
    this.ensureConnected();
  }
  private list<T>(prefix: string): Listing<T> {
    this.open();
    return {
      items: this.backend.range(prefix).map(([, e]) => JSON.parse(e.value) as T),
      revision: this.backend.revision,
    };
  }
  private read<T>(key: string): T | null {
    const e = this.backend.get(key);
    return e ? (JSON.parse(e.value) as T) : null;
  }
  private suffixes(prefix: string): string[] {
    return this.backend.range(prefix).map(([k]) => k.slice(prefix.length));
  }

  async registerHost(host: HostRegistration, ttlSeconds: number, options: RegisterOptions = {}): Promise<HostLease> {
    this.open();
    checkHost(host, ttlSeconds);
    // As on etcd: a live hosts/<id> belongs to a live host; nobody else takes it over, except the
    // process that this host's own previous one proved gone.
    const live = this.backend.get(keys.host(host.id));
    const replaced = live !== undefined && isReplaceableHost(live.value, options.replaces);
    if (live && !replaced) throw new StoreError('VEIL_ERR_HOST_ID_IN_USE', host.id);
    if (live?.lease !== undefined) this.backend.revokeLease(live.lease);
    const mine = this.backend.range(keys.hostIndexPrefix()).find(([, e]) => e.value === host.id);
    const free = (): number | null =>
      pickFree(HOST_INDEX_MIN, HOST_INDEX_MAX, new Set(this.suffixes(keys.hostIndexPrefix()).map(Number)), 0);
    let index = mine ? Number(mine[0].slice(keys.hostIndexPrefix().length)) : free();
    if (index === null && this.#reclaim().length > 0) index = free(); // synchronously: no other call in between
    if (index === null)
      throw new StoreError('VEIL_ERR_INDEX_EXHAUSTED', `all ${HOST_INDEX_MAX} host indexes are taken`);
    const lease = this.backend.grantLease(this, ttlSeconds);
    const record: HostRecord = { ...host, index };
    this.backend.commit([
      ...(mine ? [] : [{ put: keys.hostIndex(index), value: host.id }]),
      { put: keys.host(host.id), value: JSON.stringify(record), lease: lease.id },
    ]);
    return new MemoryHostLease(this.backend, host.id, index, lease.id, lease, this, replaced);
  }

  async listHosts(): Promise<Listing<HostRecord>> {
    return this.list<HostRecord>(keys.hostsPrefix());
  }

  async reclaimHostIndexes(): Promise<HostIndexClaim[]> {
    this.open();
    return this.#reclaim();
  }

  #reclaim(): HostIndexClaim[] {
    const claims = this.backend
      .range(keys.hostIndexPrefix())
      .map(([k, e]) => ({ index: Number(k.slice(keys.hostIndexPrefix().length)), hostId: e.value }));
    const live = new Set(this.suffixes(keys.hostsPrefix()));
    const named = new Set(this.backend.range(keys.copiesPrefix()).flatMap(([k]) => copyRef(k)?.hostId ?? []));
    const freed = reclaimableHostIndexes(claims, live, named);
    if (freed.length > 0) this.backend.commit(freed.map((c) => ({ del: keys.hostIndex(c.index) })));
    return freed;
  }

  async createNetwork(spec: NetworkSpec): Promise<NetworkRecord> {
    this.open();
    const base = buildNetwork(spec, this.list<NetworkRecord>(keys.networksPrefix()).items, new Date());
    if (this.backend.get(keys.name(base.name))) throw new StoreError('VEIL_ERR_NETWORK_NAME_TAKEN', base.name);
    if (base.vni !== undefined && this.backend.get(keys.vni(base.vni)))
      throw new StoreError('VEIL_ERR_VNI_TAKEN', String(base.vni));
    if (this.backend.get(keys.network(base.id))) throw new StoreError('VEIL_ERR_NETWORK_EXISTS', base.id);
    const vni =
      base.vni ?? pickFree(VNI_ALLOCATION_MIN, VNI_MAX, new Set(this.suffixes(keys.vnisPrefix()).map(Number)), 0);
    const index = pickFree(
      NETWORK_INDEX_MIN,
      NETWORK_INDEX_MAX,
      new Set(this.suffixes(keys.netIndexPrefix()).map(Number)),
      0,
    );
    if (vni === null || index === null)
      throw new StoreError('VEIL_ERR_INDEX_EXHAUSTED', vni === null ? 'no free VNI' : 'no free network index');
    const record: NetworkRecord = { ...base, vni, index };
    this.backend.commit([
      { put: keys.network(record.id), value: JSON.stringify(record) },
      { put: keys.name(record.name), value: record.id },
      { put: keys.vni(vni), value: record.id },
      { put: keys.netIndex(index), value: record.id },
    ]);
    return record;
  }

  private findNetwork(idOrName: string): NetworkRecord {
    this.open();
    let net = SEGMENT_RE.test(idOrName) ? this.read<NetworkRecord>(keys.network(idOrName)) : null;
    if (!net && SEGMENT_RE.test(idOrName)) {
      const id = this.backend.get(keys.name(idOrName))?.value;
      if (id) net = this.read<NetworkRecord>(keys.network(id));
    }
    if (!net) throw new StoreError('VEIL_ERR_NOT_FOUND', `network ${idOrName}`);
    return net;
  }

  async getNetwork(idOrName: string): Promise<NetworkRecord> {
    return this.findNetwork(idOrName);
  }

  async listNetworks(): Promise<Listing<NetworkRecord>> {
    return this.list<NetworkRecord>(keys.networksPrefix());
  }

  async deleteNetwork(idOrName: string): Promise<void> {
    const net = this.findNetwork(idOrName);
    const count = this.backend.range(keys.endpointsPrefix(net.id)).length;
    if (count > 0)
      throw new StoreError('VEIL_ERR_NETWORK_HAS_ENDPOINTS', `network ${net.name} has ${count} endpoint(s)`);
    this.backend.commit([
      { del: keys.network(net.id) },
      { del: keys.name(net.name) },
      { del: keys.vni(net.vni) },
      { del: keys.netIndex(net.index) },
      { delPrefix: keys.ipamPrefix(net.id) },
      { delPrefix: keys.keysPrefix(net.id) },
      { delPrefix: keys.copiesPrefix(net.id) },
      { delPrefix: keys.acksPrefix(net.id) },
      { del: keys.rotate(net.id) },
    ]);
  }

  async requestRotation(r: RotationRequestRecord): Promise<void> {
    checkRotationRequest(r);
    this.findNetwork(r.networkId);
    const current = this.read<RotationRequestRecord>(keys.rotate(r.networkId));
    if (current && current.afterEpoch > r.afterEpoch) return;
    this.backend.commit([{ put: keys.rotate(r.networkId), value: JSON.stringify(r) }]);
  }

  async getRotationRequest(networkId: string): Promise<RotationRequestRecord | null> {
    this.open();
    return SEGMENT_RE.test(networkId) ? this.read<RotationRequestRecord>(keys.rotate(networkId)) : null;
  }

  async createEndpoint(spec: EndpointSpec): Promise<EndpointRecord> {
    const net = this.findNetwork(spec.networkId);
    const { id, requestedIp } = checkEndpoint(spec, net);
    if (this.backend.get(keys.endpoint(net.id, id)))
      throw new StoreError('VEIL_ERR_ENDPOINT_EXISTS', `${id} in network ${net.name}`);
    const taken = new Set(this.suffixes(keys.ipamPrefix(net.id)));
    const holder = requestedIp === undefined ? undefined : this.backend.get(keys.ipam(net.id, requestedIp))?.value;
    const reserved = spec.reservedBy !== undefined && holder === addressReservation(spec.reservedBy);
    if (requestedIp !== undefined && taken.has(requestedIp) && !reserved)
      throw new StoreError('VEIL_ERR_IP_TAKEN', `${requestedIp} in network ${net.name}`);
    if (spec.reservedBy !== undefined && !reserved)
      throw new StoreError('VEIL_ERR_NOT_FOUND', `reservation of ${requestedIp} in network ${net.name}`);
    const ip = requestedIp ?? pickFreeIp(allocRange(net.ipam), taken, 0);
    if (ip === null)
      throw new StoreError('VEIL_ERR_IPAM_EXHAUSTED', `network ${net.name} (${net.ipam.ipRange ?? net.ipam.subnet})`);
    const record: EndpointRecord = {
      id,
      networkId: net.id,
      name: spec.name,
      aliases: [...(spec.aliases ?? [])],
      hostId: spec.hostId,
      mac: spec.mac ?? macFromIpv4(ip),
      ipv4: ip,
      ...(spec.sandbox ? { sandbox: spec.sandbox } : {}),
      ...(spec.ifName ? { ifName: spec.ifName } : {}),
      ...(spec.runtime ? { runtime: { kind: spec.runtime.kind, containerId: spec.runtime.containerId } } : {}),
    };
    this.backend.commit([
      { put: keys.ipam(net.id, ip), value: id },
      { put: keys.endpoint(net.id, id), value: JSON.stringify(record) },
    ]);
    return record;
  }

  async listEndpoints(networkId?: string): Promise<Listing<EndpointRecord>> {
    return this.list<EndpointRecord>(keys.endpointsPrefix(networkId));
  }

  async deleteEndpoint(networkId: string, endpointId: string): Promise<void> {
    this.open();
    const ep =
      SEGMENT_RE.test(networkId) && SEGMENT_RE.test(endpointId)
        ? this.read<EndpointRecord>(keys.endpoint(networkId, endpointId))
        : null;
    if (!ep) throw new StoreError('VEIL_ERR_NOT_FOUND', `endpoint ${endpointId} in network ${networkId}`);
    this.backend.commit([{ del: keys.endpoint(networkId, endpointId) }, { del: keys.ipam(networkId, ep.ipv4) }]);
  }

  async updateEndpoint(networkId: string, endpointId: string, changes: EndpointChanges): Promise<EndpointRecord> {
    const net = this.findNetwork(networkId);
    const ep = SEGMENT_RE.test(endpointId) ? this.read<EndpointRecord>(keys.endpoint(net.id, endpointId)) : null;
    if (!ep) throw new StoreError('VEIL_ERR_NOT_FOUND', `endpoint ${endpointId} in network ${net.name}`);
    const next = changedEndpoint(ep, changes, net);
    this.backend.commit([{ put: keys.endpoint(net.id, endpointId), value: JSON.stringify(next) }]);
    return next;
  }

  async reserveAddress(networkId: string, holder: string, ipv4?: string): Promise<string> {
    const net = this.findNetwork(networkId);
    const value = addressReservation(holder);
    const { requestedIp } = checkEndpoint(
      { networkId, name: 'reservation', hostId: holder, ...(ipv4 ? { ipv4 } : {}) },
      net,
    );
    const taken = new Set(this.suffixes(keys.ipamPrefix(net.id)));
    if (requestedIp !== undefined && taken.has(requestedIp))
      throw new StoreError('VEIL_ERR_IP_TAKEN', `${requestedIp} in network ${net.name}`);
    const ip = requestedIp ?? pickFreeIp(allocRange(net.ipam), taken, 0);
    if (ip === null)
      throw new StoreError('VEIL_ERR_IPAM_EXHAUSTED', `network ${net.name} (${net.ipam.ipRange ?? net.ipam.subnet})`);
    this.backend.commit([{ put: keys.ipam(net.id, ip), value }]);
    return ip;
  }

  async releaseAddress(networkId: string, ipv4: string, holder: string, revision?: number): Promise<void> {
    this.open();
    if (!SEGMENT_RE.test(networkId) || !SEGMENT_RE.test(ipv4)) return;
    const key = keys.ipam(networkId, ipv4);
    const entry = this.backend.get(key);
    if (entry?.value === addressReservation(holder) && (revision === undefined || entry.create === revision))
      this.backend.commit([{ del: key }]);
  }

  async listReservations(networkId: string, holder: string): Promise<Reservation[]> {
    this.open();
    if (!SEGMENT_RE.test(networkId)) return [];
    const value = addressReservation(holder);
    const prefix = keys.ipamPrefix(networkId);
    return this.backend
      .range(prefix)
      .filter(([, e]) => e.value === value)
      .map(([k, e]) => ({ ipv4: k.slice(prefix.length), revision: e.create }))
      .sort((a, b) => compareIpv4(a.ipv4, b.ipv4));
  }

  private fence(leader: Leadership): MemoryLeadership {
    if (!(leader instanceof MemoryLeadership)) throw new TypeError('leadership from another store');
    this.open();
    if (leader.lost.aborted) throw new StoreError('VEIL_ERR_NOT_LEADER', 'leadership already lost');
    if (this.backend.get(leader.fenceKey)?.create !== leader.fenceRevision) {
      leader.lose('leader key gone');
      throw new StoreError('VEIL_ERR_NOT_LEADER', 'leader key gone; write refused');
    }
    return leader;
  }

  /** As on etcd, epochs are also fenced on their network: none is written for (or outlives) a deleted network. */
  private networkExists(networkId: string): void {
    if (!this.backend.get(keys.network(networkId)))
      throw new StoreError('VEIL_ERR_NOT_FOUND', `network ${networkId} (deleted); epoch write refused`);
  }

  /** As EtcdStore: copies in transactions of COPIES_PER_TXN, then the record (each its own revision). */
  async putEpoch(leader: Leadership, record: KeyEpochRecord, copies: WrappedCopies = {}): Promise<void> {
    checkEpoch(record);
    checkCopies(copies);
    const { networkId, epoch } = record;
    const recordKey = keys.keyEpoch(networkId, epoch);
    const epochCopies = keys.copiesPrefix(networkId, epoch);
    // As on etcd: only a publish can be a first write.
    const fresh = record.state === 'published' && this.backend.get(recordKey) === undefined;
    const puts: Op[] = Object.entries(copies).map(([hostId, wrapped]) => ({
      put: keys.copy(networkId, epoch, hostId),
      value: JSON.stringify({ wrapped }),
    }));
    const fenced = async (ops: Op[]): Promise<void> => {
      this.fence(leader);
      this.networkExists(networkId);
      this.backend.commit(ops);
      await Promise.resolve(); // another caller may run between two transactions, as on etcd
    };
    if (fresh && puts.length > 0) await fenced([{ delPrefix: epochCopies }]);
    for (let i = 0; i < puts.length; i += COPIES_PER_TXN) await fenced(puts.slice(i, i + COPIES_PER_TXN));
    await fenced([
      ...(fresh && puts.length === 0 ? [{ delPrefix: epochCopies }] : []),
      { put: recordKey, value: JSON.stringify(record) },
      ...(record.state === 'retired' ? [{ delPrefix: epochCopies }] : []),
    ]);
  }

  async deleteEpoch(leader: Leadership, networkId: string, epoch: number): Promise<void> {
    this.fence(leader);
    this.networkExists(networkId);
    this.backend.commit([
      { del: keys.keyEpoch(networkId, epoch) },
      { delPrefix: keys.copiesPrefix(networkId, epoch) },
      { delPrefix: keys.acksPrefix(networkId, epoch) },
    ]);
  }

  async getCopy(networkId: string, epoch: number, hostId: string): Promise<string | null> {
    this.open();
    const copy = decode(this.backend.get(keys.copy(networkId, epoch, hostId))?.value ?? null);
    return isWrappedCopy(copy) ? copy.wrapped : null;
  }

  async listCopies(networkId: string): Promise<Listing<CopyRef>> {
    this.open();
    const items = this.backend.range(keys.copiesPrefix(networkId)).flatMap(([k]) => copyRef(k) ?? []);
    return { items, revision: this.backend.revision };
  }

  async getEpochs(networkId: string): Promise<Listing<KeyEpochRecord>> {
    const l = this.list<KeyEpochRecord>(keys.keysPrefix(networkId));
    l.items.sort((a, b) => a.epoch - b.epoch);
    return l;
  }

  async ack(host: HostLease, record: AckRecord): Promise<void> {
    if (!(host instanceof MemoryHostLease)) throw new TypeError('host lease from another store');
    this.open();
    checkAck(record, host.hostId);
    if (host.lost.aborted || !this.backend.leaseAlive(host.leaseId))
      throw new StoreError('VEIL_ERR_STORE_UNAVAILABLE', 'host lease lost');
    this.backend.commit([
      {
        put: keys.ack(record.networkId, record.epoch, record.hostId),
        value: JSON.stringify(record),
        lease: host.leaseId,
      },
    ]);
  }

  async listAcks(networkId: string, epoch: number): Promise<Listing<AckRecord>> {
    return this.list<AckRecord>(keys.acksPrefix(networkId, epoch));
  }

  election(name: string = KEYSCHEDULE_ELECTION, ttlSeconds = 10): LeaderElection {
    const prefix = keys.electionPrefix(name);
    const backend = this.backend;
    const leaderEntry = (): [string, { value: string; create: number }] | undefined =>
      backend.range(prefix).sort(([, a], [, b]) => a.create - b.create)[0];
    return {
      campaign: (value, opts = {}) => {
        this.open();
        return new Promise<Leadership>((resolve, reject) => {
          if (opts.signal?.aborted) return reject(opts.signal.reason);
          const lease = backend.grantLease(this, ttlSeconds, true);
          const key = `${prefix}${lease.id.toString(16)}`;
          backend.commit([{ put: key, value, lease: lease.id }]);
          const create = backend.get(key)!.create;
          let leadership: MemoryLeadership | null = null;
          const check = (): void => {
            if (leadership) return;
            const head = leaderEntry();
            if (head?.[0] !== key) return;
            cleanup();
            leadership = new MemoryLeadership(backend, value, lease.id, key, create);
            const l = leadership;
            lease.onLost.push(() => l.lose('election lease lost'));
            resolve(l);
          };
          const watch = new MemoryWatch(
            backend,
            prefix,
            backend.revision + 1,
            { onEvents: check, onResync: check },
            this,
          );
          const onAbort = (): void => {
            cleanup();
            reject(opts.signal?.reason);
            backend.revokeLease(lease.id);
          };
          const cleanup = (): void => {
            void watch.cancel();
            opts.signal?.removeEventListener('abort', onAbort);
          };
          opts.signal?.addEventListener('abort', onAbort, { once: true });
          lease.onLost.push(() => {
            if (!leadership) {
              cleanup();
              reject(new StoreError('VEIL_ERR_STORE_UNAVAILABLE', 'campaign lease lost'));
            }
          });
          setImmediate(check);
        });
      },
      leader: async () => {
        this.open();
        return leaderEntry()?.[1].value;
      },
      observe: async (onChange) => {
        this.open();
        let current = leaderEntry()?.[1].value;
        onChange(current);
        const w = new MemoryWatch(
          backend,
          prefix,
          backend.revision + 1,
          {
            onEvents: () => {
              const next = leaderEntry()?.[1].value;
              if (next !== current) onChange((current = next));
            },
            onResync: () => undefined,
          },
          this,
        );
        return { cancel: () => w.cancel() };
      },
    };
  }

  async watch(range: KeyRange, fromRevision: number, handler: WatchHandler): Promise<WatchHandle> {
    this.open();
    const w = new MemoryWatch(this.backend, range, fromRevision, handler, this);
    this.watches.add(w);
    return w;
  }

  async dump(): Promise<Map<string, string>> {
    this.open();
    return this.backend.dump();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watches) await w.cancel();
    this.backend.orphanLeases(this);
  }
}
