import { SEGMENT_RE, SHARED_RANGE, keys, type KeyRange } from './layout.js';
import type {
  AckRecord,
  CopyRef,
  EndpointChanges,
  EndpointRecord,
  EndpointSpec,
  HostIndexClaim,
  HostLease,
  HostRecord,
  HostRegistration,
  KeyEpochRecord,
  WrappedCopies,
  LeaderElection,
  Leadership,
  Listing,
  NetworkRecord,
  NetworkSpec,
  RegisterOptions,
  Reservation,
  RotationRequestRecord,
  Store,
  WatchEvent,
  WatchHandle,
  WatchHandler,
} from './types.js';

/** How long a write waits for the replica to show it before the reads fall back to the store. */
export const READ_YOUR_WRITES_WAIT_MS = 2_000;

/** The prefixes the replica holds: what the API reads on every request. */
const CACHED = [keys.networksPrefix(), keys.endpointsPrefix(), keys.hostsPrefix(), keys.keysPrefix()];
const cached = (key: string): boolean => CACHED.some((p) => key.startsWith(p));

/**
 * A Store whose reads of networks, endpoints, hosts and key epochs answer from a replica in memory,
 * kept by one watch over the shared layout (SHARED_RANGE, docs/api.md "Reads"); every other call goes to the store. Another
 * host's writes are here once the watch brings them (milliseconds); a network looked up by id or name
 * and not found here is asked of the store.
 *
 * Read-your-writes: a write through this object returns once the replica shows it (the watch
 * delivered its event), so the next read here sees it. If the watch does not deliver it within
 * READ_YOUR_WRITES_WAIT_MS (etcd slow or unreachable), reads go to the store until it has.
 */
export class CachedStore implements Store {
  readonly #replica = new Map<string, unknown>();
  /** Conditions on the replica that own writes are waiting for; reads bypass it while any is unmet. */
  readonly #pending = new Map<() => boolean, () => void>();
  #revision = 0;
  #ready = false;
  #watch: WatchHandle | undefined;

  constructor(readonly inner: Store) {}

  /** Loads the replica and starts its watch. Until it resolves, reads go to the store. */
  async start(): Promise<void> {
    const [networks, endpoints, hosts] = await Promise.all([
      this.inner.listNetworks(),
      this.inner.listEndpoints(),
      this.inner.listHosts(),
    ]);
    const epochs = await Promise.all(networks.items.map((n) => this.inner.getEpochs(n.id)));
    // Listings read at different revisions: replaying every event after the oldest one onto them,
    // in order, leaves each key as its last event made it (puts and deletes are idempotent per key).
    const from = Math.min(networks.revision, endpoints.revision, hosts.revision, ...epochs.map((e) => e.revision));
    for (const n of networks.items) this.#replica.set(keys.network(n.id), n);
    for (const e of endpoints.items) this.#replica.set(keys.endpoint(e.networkId, e.id), e);
    for (const h of hosts.items) this.#replica.set(keys.host(h.id), h);
    for (const l of epochs) for (const r of l.items) this.#replica.set(keys.keyEpoch(r.networkId, r.epoch), r);
    this.#revision = from;
    this.#watch = await this.inner.watch(SHARED_RANGE, from + 1, {
      onEvents: (events) => this.#apply(events),
      onResync: (snapshot, revision) => {
        this.#replica.clear();
        for (const { key, value } of snapshot) if (cached(key)) this.#replica.set(key, value);
        this.#revision = revision;
        this.#settle();
      },
    });
    this.#ready = true;
  }

  /** The revision of the last event the replica applied. */
  get revision(): number {
    return this.#revision;
  }

  #apply(events: WatchEvent[]): void {
    for (const e of events) {
      if (cached(e.key)) {
        if (e.type === 'put') this.#replica.set(e.key, e.value);
        else this.#replica.delete(e.key);
      }
      this.#revision = e.revision;
      // After each event, not each batch: a write followed by its undoing in one batch still counts.
      if (this.#pending.size > 0) this.#settle();
    }
  }

  #settle(): void {
    for (const [met, resolve] of this.#pending) {
      if (!met()) continue;
      this.#pending.delete(met);
      resolve();
    }
  }

  /** Waits (bounded) until the replica meets `met`; reads bypass the replica until it does. */
  async #shown(met: () => boolean): Promise<void> {
    if (!this.#ready || met()) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.#pending.set(met, resolve);
      timer = setTimeout(resolve, READ_YOUR_WRITES_WAIT_MS);
      timer.unref?.();
    });
    clearTimeout(timer);
  }

  get #fresh(): boolean {
    return this.#ready && this.#pending.size === 0;
  }

  #values<T>(prefix: string): T[] {
    const out: Array<[string, T]> = [];
    for (const [k, v] of this.#replica) if (k.startsWith(prefix)) out.push([k, v as T]);
    // Key order, as etcd lists them.
    return out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([, v]) => v);
  }

  #network(idOrName: string): NetworkRecord | undefined {
    const byId = this.#replica.get(keys.network(idOrName)) as NetworkRecord | undefined;
    return byId ?? this.#values<NetworkRecord>(keys.networksPrefix()).find((n) => n.name === idOrName);
  }

  // ---- reads from the replica -------------------------------------------------------------

  async listNetworks(): Promise<Listing<NetworkRecord>> {
    if (!this.#fresh) return this.inner.listNetworks();
    return { items: this.#values(keys.networksPrefix()), revision: this.#revision };
  }

  /** A miss asks the store: a network another host created a moment ago may not be here yet. */
  async getNetwork(idOrName: string): Promise<NetworkRecord> {
    return (this.#fresh && SEGMENT_RE.test(idOrName) && this.#network(idOrName)) || this.inner.getNetwork(idOrName);
  }

  async listEndpoints(networkId?: string): Promise<Listing<EndpointRecord>> {
    if (!this.#fresh || (networkId !== undefined && !SEGMENT_RE.test(networkId)))
      return this.inner.listEndpoints(networkId);
    return { items: this.#values(keys.endpointsPrefix(networkId)), revision: this.#revision };
  }

  async listHosts(): Promise<Listing<HostRecord>> {
    if (!this.#fresh) return this.inner.listHosts();
    return { items: this.#values(keys.hostsPrefix()), revision: this.#revision };
  }

  async getEpochs(networkId: string): Promise<Listing<KeyEpochRecord>> {
    if (!this.#fresh || !SEGMENT_RE.test(networkId)) return this.inner.getEpochs(networkId);
    const items = this.#values<KeyEpochRecord>(keys.keysPrefix(networkId)).sort((a, b) => a.epoch - b.epoch);
    return { items, revision: this.#revision };
  }

  // ---- writes: to the store, then until the replica shows them --------------------------------

  async registerHost(host: HostRegistration, ttlSeconds: number, options?: RegisterOptions): Promise<HostLease> {
    const lease = await this.inner.registerHost(host, ttlSeconds, options);
    await this.#shown(
      () => (this.#replica.get(keys.host(host.id)) as HostRecord | undefined)?.incarnation === host.incarnation,
    );
    return lease;
  }

  async createNetwork(spec: NetworkSpec): Promise<NetworkRecord> {
    const n = await this.inner.createNetwork(spec);
    await this.#shown(() => this.#replica.has(keys.network(n.id)));
    return n;
  }

  async deleteNetwork(idOrName: string): Promise<void> {
    const id = this.#ready ? this.#network(idOrName)?.id : undefined;
    await this.inner.deleteNetwork(idOrName);
    if (id !== undefined) await this.#shown(() => !this.#replica.has(keys.network(id)));
  }

  async createEndpoint(spec: EndpointSpec): Promise<EndpointRecord> {
    const e = await this.inner.createEndpoint(spec);
    await this.#shown(() => this.#replica.has(keys.endpoint(e.networkId, e.id)));
    return e;
  }

  async deleteEndpoint(networkId: string, endpointId: string): Promise<void> {
    await this.inner.deleteEndpoint(networkId, endpointId);
    await this.#shown(() => !this.#replica.has(keys.endpoint(networkId, endpointId)));
  }

  async updateEndpoint(networkId: string, endpointId: string, changes: EndpointChanges): Promise<EndpointRecord> {
    const e = await this.inner.updateEndpoint(networkId, endpointId, changes);
    await this.#shown(() => sameJson(this.#replica.get(keys.endpoint(networkId, endpointId)), e));
    return e;
  }

  async putEpoch(leader: Leadership, record: KeyEpochRecord, copies?: WrappedCopies): Promise<void> {
    await this.inner.putEpoch(leader, record, copies);
    await this.#shown(() => sameJson(this.#replica.get(keys.keyEpoch(record.networkId, record.epoch)), record));
  }

  async deleteEpoch(leader: Leadership, networkId: string, epoch: number): Promise<void> {
    await this.inner.deleteEpoch(leader, networkId, epoch);
    await this.#shown(() => !this.#replica.has(keys.keyEpoch(networkId, epoch)));
  }

  // ---- the rest: the store's own --------------------------------------------------------------

  reclaimHostIndexes(): Promise<HostIndexClaim[]> {
    return this.inner.reclaimHostIndexes();
  }
  reserveAddress(networkId: string, holder: string, ipv4?: string): Promise<string> {
    return this.inner.reserveAddress(networkId, holder, ipv4);
  }
  releaseAddress(networkId: string, ipv4: string, holder: string, revision?: number): Promise<void> {
    return this.inner.releaseAddress(networkId, ipv4, holder, revision);
  }
  listReservations(networkId: string, holder: string): Promise<Reservation[]> {
    return this.inner.listReservations(networkId, holder);
  }
  ack(host: HostLease, record: AckRecord): Promise<void> {
    return this.inner.ack(host, record);
  }
  listAcks(networkId: string, epoch: number): Promise<Listing<AckRecord>> {
    return this.inner.listAcks(networkId, epoch);
  }
  getCopy(networkId: string, epoch: number, hostId: string): Promise<string | null> {
    return this.inner.getCopy(networkId, epoch, hostId);
  }
  listCopies(networkId: string): Promise<Listing<CopyRef>> {
    return this.inner.listCopies(networkId);
  }
  requestRotation(request: RotationRequestRecord): Promise<void> {
    return this.inner.requestRotation(request);
  }
  getRotationRequest(networkId: string): Promise<RotationRequestRecord | null> {
    return this.inner.getRotationRequest(networkId);
  }
  election(name?: string, ttlSeconds?: number): LeaderElection {
    return this.inner.election(name, ttlSeconds);
  }
  watch(range: KeyRange, fromRevision: number, handler: WatchHandler): Promise<WatchHandle> {
    return this.inner.watch(range, fromRevision, handler);
  }
  dump(): Promise<Map<string, string>> {
    return this.inner.dump();
  }

  /** Stops the replica's watch; the store itself is its owner's to close. */
  async close(): Promise<void> {
    this.#ready = false;
    for (const resolve of this.#pending.values()) resolve();
    this.#pending.clear();
    await this.#watch?.cancel();
  }
}

/** JSON equality regardless of key order (a record as written and as a watch decoded it). */
function sameJson(a: unknown, b: unknown): boolean {
  const canonical = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(canonical)
      : v && typeof v === 'object'
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
          )
        : v;
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}
