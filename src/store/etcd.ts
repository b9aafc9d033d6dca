/*
 * The Store on etcd (v3 API, etcd3 client), the only importer of `etcd3`.
 *
 * How etcd is used (docs/etcd.md):
 *  - one client namespaced to /veil/v1/ (layout.ts); no other code spells a key;
 *  - leases for liveness: hosts/<id> and its acks live and die with the host's lease;
 *  - every multi-key change is one transaction whose compares state what must still be
 *    true (a key absent: Create == 0; unchanged since read: Mod == r); a failed compare
 *    re-reads and retries, or names the conflict with a StoreError;
 *  - "no endpoint under this network" and "no network created since I read them" are
 *    compares over a key RANGE (etcd >= 3.3: Compare.range_end). etcd3's if()/and()
 *    builder has no range_end, so those two transactions go to the KV client's txn()
 *    with the prefixed keys spelled out (rangeCompare below);
 *  - the key-schedule election is etcd3's Election (the Go client's protocol); every
 *    leader write is fenced by a compare on the leader's own election key (and an
 *    epoch write also on its network still existing);
 *  - watches start from the revision just read and resume from the last revision
 *    delivered; a compaction past it becomes a resync (re-list, then continue).
 */

import {
  Etcd3,
  isRecoverableError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  ClientClosedError,
  EtcdLeaseInvalidError,
  type Campaign,
  type Election,
  type IKeyValue,
  type IOperation,
  type IOptions,
  type IRequestOp,
  type ICompare,
  type Lease,
  type Namespace,
  type Watcher,
  type IWatchResponse,
} from 'etcd3';
import { circuitBreaker, ConsecutiveBreaker, handleWhen, retry, type IPolicy } from 'cockatiel';
import { StoreError } from './errors.js';
import { compareIpv4 } from '../model/ipv4.js';
import { KEYSCHEDULE_ELECTION, PREFIX, SEGMENT_RE, SHARED_RANGE, keys, prefixEnd, type KeyRange } from './layout.js';
import { SharedWatch, rangeWithin } from './shared-watch.js';
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
  StoreFigures,
  Store,
  WatchEvent,
  WatchHandle,
  WatchHandler,
  RotationRequestRecord,
} from './types.js';

export interface EtcdStoreOptions {
  endpoints: string[];
  /** Per unary call; a call to an unreachable etcd fails with VEIL_ERR_STORE_UNAVAILABLE after this. Default 5000. */
  callTimeoutMs?: number;
  dialTimeoutMs?: number;
  /** Layout prefix; default /veil/v1/. Tests may use their own to share one etcd. */
  prefix?: string;
  /** TLS to etcd (PEM contents): the CA that signed etcd's certificate, and a client certificate and key if etcd asks for one. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  /**
   * Tests only: every call is sent twice and the first answer dropped, as when etcd applied a write
   * whose answer was lost and the client sent it again (see "Writes sent twice" in docs/etcd.md).
   */
  answerLostOnce?: boolean;
}

/**
 * The etcd client sends a call that failed with a recoverable error (a member gone, a deadline
 * passed) again, to another member: three attempts in all, its default. A write etcd applied before
 * its answer was lost thus arrives twice, and every write below recognises its own earlier success
 * (docs/etcd.md "Writes sent twice").
 */
const CLIENT_RETRY = retry(handleWhen(isRecoverableError), { maxAttempts: 3 });

/** The policy with every call run twice, the first answer dropped (EtcdStoreOptions.answerLostOnce). */
function answerLostOnce<P extends IPolicy>(policy: P): P {
  const twice = Object.create(policy) as P;
  twice.execute = (async (fn: (...args: never[]) => unknown, signal?: AbortSignal) => {
    await policy.execute(fn as never, signal).catch(() => undefined);
    return policy.execute(fn as never, signal);
  }) as P['execute'];
  return twice;
}

/** Optimistic transactions retry this many times before VEIL_ERR_STORE_CONFLICT. */
const MAX_ATTEMPTS = 100;

const json = (v: unknown): string => JSON.stringify(v);
const decode = <T>(buf: Buffer | undefined): T => JSON.parse(buf ? buf.toString('utf8') : 'null') as T;
/** Watch values: records are JSON; index keys and election keys hold bare strings. */
function decodeLoose(buf: Buffer | undefined): unknown {
  if (!buf || buf.length === 0) return null;
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch {
    return buf.toString('utf8');
  }
}
const rev = (r: string | number | undefined | null): number => Number(r ?? 0);

/**
 * How long a member that failed three calls in a row is skipped before one call tries it again. etcd3's
 * default is 5 s, so after an outage a host refused store calls for up to 5 s with every member back.
 */
export const MEMBER_RETRY_AFTER_MS = 1_000;

/** A small random pause between optimistic retries so colliding writers spread out. */
const jitter = (attempt: number): Promise<void> =>
  new Promise((r) => setTimeout(r, Math.random() * Math.min(50, 2 * attempt)));

function unavailable(err: unknown): StoreError | null {
  // etcd3 puts a circuit breaker (cockatiel) in front of each member: after 3 failures it
  // refuses calls for 5 s with a BrokenCircuitError, which is etcd being unreachable too.
  const brokenCircuit =
    typeof err === 'object' &&
    err !== null &&
    (err as { isBrokenCircuitError?: boolean }).isBrokenCircuitError === true;
  if (
    err instanceof GRPCUnavailableError ||
    err instanceof GRPCDeadlineExceededError ||
    err instanceof ClientClosedError ||
    brokenCircuit
  ) {
    // The breaker's own words ("circuit breaker is open") mean nothing to an operator.
    const detail = brokenCircuit
      ? `no member answers (each is tried again ${MEMBER_RETRY_AFTER_MS / 1000} s after its last failure)`
      : (err as Error).message;
    return new StoreError('VEIL_ERR_STORE_UNAVAILABLE', detail, { cause: err });
  }
  return null;
}

/** Maps client failures to StoreError; StoreErrors and programming errors pass through. */
async function guard<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw unavailable(err) ?? err;
  }
}

class EtcdHostLease implements HostLease {
  private readonly ctl = new AbortController();
  constructor(
    readonly hostId: string,
    readonly index: number,
    readonly lease: Lease,
    readonly replaced: boolean,
    /** Drops it from the store's live leases, once it is lost or revoked. */
    private readonly forget: () => void,
  ) {
    lease.on('lost', (err) => {
      forget();
      this.ctl.abort(new StoreError('VEIL_ERR_STORE_UNAVAILABLE', `host lease lost: ${err.message}`));
    });
  }
  get lost(): AbortSignal {
    return this.ctl.signal;
  }
  async revoke(): Promise<void> {
    if (!this.ctl.signal.aborted) this.ctl.abort(new StoreError('VEIL_ERR_NOT_FOUND', 'host lease revoked'));
    try {
      await guard(() => this.lease.revoke());
    } finally {
      this.forget();
    }
  }
}

/**
 * Leadership on etcd. etcd3 reports a lost campaign lease only 2 x TTL after the last
 * keepalive, while another candidate can win TTL after it. So the leader also
 * confirms its own key every TTL/3 and gives up (lost) when it has not confirmed it
 * for 2/3 of the TTL. The fence on every leader write is the hard guarantee; this is
 * what makes "stop leader work now" timely.
 *
 * Giving up always resigns the campaign too (revokes its lease, once): after an
 * event-loop stall or a slow etcd the lease may still be alive, and etcd3 would keep it
 * so; its key would then stay first in the election and every later campaign, on any
 * host, would wait behind it for ever. etcd3 stops the keepalives before it asks etcd to
 * revoke, so even an unanswered revoke frees the election within the TTL.
 */
class EtcdLeadership implements Leadership {
  private readonly ctl = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private lastConfirmed = Date.now();
  private resigned: Promise<void> | null = null;

  constructor(
    readonly value: string,
    readonly campaign: Campaign,
    /** The leader's own election key (relative to the layout prefix) and its create revision: the fence. */
    readonly fenceKey: string,
    readonly fenceRevision: number,
    ns: Namespace,
    ttlSeconds: number,
    /** Drops the campaign from the store's live ones, once resigned. */
    private readonly forget: () => void,
  ) {
    const periodMs = (ttlSeconds * 1000) / 3;
    const budgetMs = (ttlSeconds * 2000) / 3;
    this.timer = setInterval(() => {
      if (Date.now() - this.lastConfirmed > budgetMs)
        return this.lose('could not confirm leadership with etcd within 2/3 of the lease TTL');
      const started = Date.now();
      ns.get(fenceKey)
        .options({ deadline: started + periodMs })
        .exec()
        .then((res) => {
          const kv = res.kvs[0];
          if (!kv || rev(kv.create_revision) !== fenceRevision) this.lose('leader key gone');
          else this.lastConfirmed = started;
        })
        .catch(() => undefined); // unreachable: the budget above decides
    }, periodMs);
    this.timer.unref();
  }
  get lost(): AbortSignal {
    return this.ctl.signal;
  }
  onLost(listener: (reason: Error) => void): void {
    if (this.ctl.signal.aborted) listener(this.ctl.signal.reason as Error);
    else this.ctl.signal.addEventListener('abort', () => listener(this.ctl.signal.reason as Error), { once: true });
  }
  confirmed(at: number): void {
    this.lastConfirmed = Math.max(this.lastConfirmed, at);
  }
  /** Ends the leadership: listeners are told, then the campaign is resigned (idempotent). */
  lose(detail: string, cause?: unknown): void {
    clearInterval(this.timer);
    if (!this.ctl.signal.aborted) this.ctl.abort(new StoreError('VEIL_ERR_NOT_LEADER', detail, { cause }));
    if (!this.resigned) {
      // A lease etcd no longer knows (expired, or revoked with its key) is resigned already.
      this.resigned = guard(() => this.campaign.resign())
        .catch((err: unknown) => {
          if (!(err instanceof EtcdLeaseInvalidError)) throw err;
        })
        .finally(this.forget);
      this.resigned.catch(() => undefined); // resign() reports it to whoever waits
    }
  }
  async resign(): Promise<void> {
    this.lose('resigned');
    await this.resigned;
  }
}

/** Host index claims freed per transaction: 2 compares each, under etcd's default --max-txn-ops of 128. */
const RECLAIM_BATCH = 32;

export class EtcdStore implements Store {
  readonly client: Etcd3;
  private readonly ns: Namespace;
  private readonly watches = new Set<EtcdWatch>();
  private readonly shared = new SharedWatch(SHARED_RANGE, (from, handler) =>
    this.openWatch(SHARED_RANGE, from, handler),
  );
  /** Released by close(): etcd3 would otherwise keep them alive after the client closes. */
  private readonly leases = new Set<Lease>();
  private readonly campaigns = new Set<Campaign>();
  /** Elections made here: close() ends the watches etcd3 leaves behind in their namespaces (see there). */
  private readonly elections = new Set<Election>();

  constructor(opts: EtcdStoreOptions) {
    const callTimeoutMs = opts.callTimeoutMs ?? 5000;
    const options: IOptions = {
      hosts: opts.endpoints,
      dialTimeout: opts.dialTimeoutMs ?? 3000,
      // Unary calls get a deadline so an unreachable etcd fails fast; streams (watch, keepalive) must not.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
      faultHandling: {
        host: () =>
          circuitBreaker(handleWhen(isRecoverableError), {
            halfOpenAfter: MEMBER_RETRY_AFTER_MS,
            breaker: new ConsecutiveBreaker(3),
          }),
        // etcd3's own default: a call that failed on one member is sent again to another, writes too.
        global: opts.answerLostOnce ? answerLostOnce(CLIENT_RETRY) : CLIENT_RETRY,
      },
      // Without a CA, grpc-js verifies etcd's certificate against the system's roots.
      ...(opts.tls
        ? {
            credentials: {
              rootCertificate: opts.tls.ca as Buffer,
              ...(opts.tls.cert ? { certChain: opts.tls.cert } : {}),
              ...(opts.tls.key ? { privateKey: opts.tls.key } : {}),
            },
          }
        : {}),
    };
    this.client = new Etcd3(options);
    this.ns = this.client.namespace(opts.prefix ?? PREFIX);
  }

  // ---- helpers ---------------------------------------------------------------------------

  private abs(key: string): Buffer {
    return Buffer.concat([this.ns.prefix, Buffer.from(key)]);
  }

  /** A compare over every key under `prefix` (Compare.range_end), which etcd3's builder cannot express. */
  private rangeCompare(prefix: string, target: 'Create' | 'Mod', result: 'Equal' | 'Less', value: number): ICompare {
    const key = this.abs(prefix);
    return {
      key,
      range_end: prefixEnd(key),
      target,
      result,
      [target === 'Create' ? 'create_revision' : 'mod_revision']: value,
    };
  }
  private keyCompare(key: string, target: 'Create' | 'Mod', value: number): ICompare {
    return {
      key: this.abs(key),
      target,
      result: 'Equal',
      [target === 'Create' ? 'create_revision' : 'mod_revision']: value,
    };
  }
  private async rawTxn(
    compare: ICompare[],
    success: Array<Promise<IRequestOp>>,
    failure: Array<Promise<IRequestOp>> = [],
  ) {
    return this.ns.kv.txn({ compare, success: await Promise.all(success), failure: await Promise.all(failure) });
  }

  /** Revokes a lease by id; one etcd no longer knows (expired meanwhile) is gone already. */
  private async revokeLeaseId(id: string): Promise<void> {
    try {
      await this.client.leaseClient.leaseRevoke({ ID: id });
    } catch (err) {
      if (!(err instanceof EtcdLeaseInvalidError)) throw err;
    }
  }

  private async getAll(prefix: string): Promise<{ kvs: IKeyValue[]; revision: number }> {
    const res = await this.ns.getAll().prefix(prefix).exec();
    return { kvs: res.kvs, revision: rev(res.header.revision) };
  }
  /** The keys under `prefix` (relative), without their values, and the revision read at. */
  private async keysUnder(prefix: string): Promise<{ keys: string[]; revision: number }> {
    const key = this.abs(prefix);
    const res = await this.ns.kv.range({ key, range_end: prefixEnd(key), keys_only: true });
    const strip = this.ns.prefix.length;
    return { keys: res.kvs.map((kv) => kv.key.subarray(strip).toString()), revision: rev(res.header.revision) };
  }
  private async list<T>(prefix: string): Promise<Listing<T>> {
    return guard(async () => {
      const { kvs, revision } = await this.getAll(prefix);
      return { items: kvs.map((kv) => decode<T>(kv.value)), revision };
    });
  }
  private async keySet(prefix: string): Promise<Set<string>> {
    const res = await this.ns.getAll().prefix(prefix).keys();
    return new Set(res.map((k) => k.slice(prefix.length)));
  }
  private async getOne<T>(key: string): Promise<{ value: T; modRevision: number } | null> {
    const res = await this.ns.get(key).exec();
    const kv = res.kvs[0];
    return kv ? { value: decode<T>(kv.value), modRevision: rev(kv.mod_revision) } : null;
  }

  // ---- hosts -------------------------------------------------------------------------------

  async registerHost(host: HostRegistration, ttlSeconds: number, options: RegisterOptions = {}): Promise<HostLease> {
    checkHost(host, ttlSeconds);
    return guard(async () => {
      const lease = this.ns.lease(ttlSeconds);
      let replaced = false;
      try {
        const leaseId = await lease.grant();
        for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
          const { kvs } = await this.getAll(keys.hostIndexPrefix());
          const mine = kvs.find((kv) => kv.value.toString() === host.id);
          const indexOf = (kv: IKeyValue): number => Number(kv.key.toString().slice(keys.hostIndexPrefix().length));
          const index = mine
            ? indexOf(mine)
            : pickFree(HOST_INDEX_MIN, HOST_INDEX_MAX, new Set(kvs.map(indexOf)), attempt);
          if (index === null) {
            // Every index is claimed: free those whose hosts are gone for good, then look again.
            if ((await this.reclaimHostIndexes()).length > 0) continue;
            throw new StoreError('VEIL_ERR_INDEX_EXHAUSTED', `all ${HOST_INDEX_MAX} host indexes are taken`);
          }
          const record: HostRecord = { ...host, index };
          const idx = keys.hostIndex(index);
          const hostKey = keys.host(host.id);
          // The index is claimed once, forever: a restarted host finds its own and keeps its SPIs' sender field.
          // hosts/<id> must be absent: a live record belongs to a live host (a cloned machine with the
          // same name must not take it over; a host back from a crash waits for its old lease to expire).
          const txn = mine
            ? this.ns
                .if(idx, 'Value', '==', host.id)
                .and(hostKey, 'Create', '==', 0)
                .then(lease.put(hostKey).value(json(record)))
            : this.ns
                .if(idx, 'Create', '==', 0)
                .and(hostKey, 'Create', '==', 0)
                .then(this.ns.put(idx).value(host.id), lease.put(hostKey).value(json(record)));
          const res = await txn.else(this.ns.get(hostKey)).commit();
          const live = res.responses[0]?.response_range?.kvs[0];
          // Or under this very lease with this very record: our own write, applied once already.
          if (res.succeeded || (live && live.lease === leaseId && live.value.toString() === json(record))) {
            this.leases.add(lease);
            return new EtcdHostLease(host.id, index, lease, replaced, () => this.leases.delete(lease));
          }
          if (live) {
            if (replaced || !isReplaceableHost(live.value.toString(), options.replaces))
              throw new StoreError('VEIL_ERR_HOST_ID_IN_USE', host.id);
            // This host's own previous process, gone: its lease goes now rather than at its TTL.
            await this.revokeLeaseId(live.lease);
            replaced = true;
            continue;
          }
          await jitter(attempt);
        }
        throw new StoreError('VEIL_ERR_STORE_CONFLICT', 'host index allocation');
      } catch (err) {
        await lease.revoke().catch(() => undefined);
        throw err;
      }
    });
  }

  listHosts(): Promise<Listing<HostRecord>> {
    return this.list<HostRecord>(keys.hostsPrefix());
  }

  async reclaimHostIndexes(): Promise<HostIndexClaim[]> {
    return guard(async () => {
      // Copies first: the transactions below hold the ~/copies/ range to this read's revision.
      const copies = await this.keysUnder(keys.copiesPrefix());
      const [claims, live] = await Promise.all([this.getAll(keys.hostIndexPrefix()), this.keySet(keys.hostsPrefix())]);
      const claimOf = new Map(
        claims.kvs.map((kv) => {
          const index = Number(kv.key.toString().slice(keys.hostIndexPrefix().length));
          return [index, { index, hostId: kv.value.toString(), modRevision: rev(kv.mod_revision) }];
        }),
      );
      const named = new Set(copies.keys.flatMap((k) => copyRef(k)?.hostId ?? []));
      const reclaimable = reclaimableHostIndexes([...claimOf.values()], live, named);
      // Each claim only if it is the one read, its host is still gone, and no copy was written since;
      // RECLAIM_BATCH claims per transaction, one by one when a batch fails (one of them changed).
      const free = (batch: HostIndexClaim[]) =>
        this.rawTxn(
          [
            this.rangeCompare(keys.copiesPrefix(), 'Mod', 'Less', copies.revision + 1),
            ...batch.flatMap((c) => [
              this.keyCompare(keys.hostIndex(c.index), 'Mod', claimOf.get(c.index)!.modRevision),
              this.keyCompare(keys.host(c.hostId), 'Create', 0),
            ]),
          ],
          batch.map((c) => this.ns.delete().key(keys.hostIndex(c.index)).op()),
        );
      // A claim gone when its own transaction failed was freed all the same (by a write of ours
      // applied once already, or by another host): it counts, since the caller wants free indexes.
      const gone = async (c: HostIndexClaim) => (await this.ns.get(keys.hostIndex(c.index)).string()) === null;
      const freed: HostIndexClaim[] = [];
      for (let i = 0; i < reclaimable.length; i += RECLAIM_BATCH) {
        const batch = reclaimable.slice(i, i + RECLAIM_BATCH);
        if ((await free(batch)).succeeded) freed.push(...batch);
        else
          for (const c of batch)
            if ((batch.length > 1 && (await free([c])).succeeded) || (await gone(c))) freed.push(c);
      }
      return freed.map((c) => ({ index: c.index, hostId: c.hostId }));
    });
  }

  // ---- networks ----------------------------------------------------------------------------

  async createNetwork(spec: NetworkSpec): Promise<NetworkRecord> {
    return guard(async () => {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const networks = await this.list<NetworkRecord>(keys.networksPrefix());
        const base = buildNetwork(spec, networks.items, new Date()); // validation and overlap, before any write
        const [vnis, indexes] = await Promise.all([this.keySet(keys.vnisPrefix()), this.keySet(keys.netIndexPrefix())]);
        const vni = base.vni ?? pickFree(VNI_ALLOCATION_MIN, VNI_MAX, new Set([...vnis].map(Number)), attempt);
        const index = pickFree(NETWORK_INDEX_MIN, NETWORK_INDEX_MAX, new Set([...indexes].map(Number)), attempt);
        if (vni === null || index === null)
          throw new StoreError('VEIL_ERR_INDEX_EXHAUSTED', vni === null ? 'no free VNI' : 'no free network index');
        const record: NetworkRecord = { ...base, vni, index };
        const res = await this.rawTxn(
          [
            this.keyCompare(keys.name(record.name), 'Create', 0),
            this.keyCompare(keys.vni(vni), 'Create', 0),
            this.keyCompare(keys.netIndex(index), 'Create', 0),
            this.keyCompare(keys.network(record.id), 'Create', 0),
            // No network was created or changed since the overlap check read them.
            this.rangeCompare(keys.networksPrefix(), 'Mod', 'Less', networks.revision + 1),
          ],
          [
            this.ns.put(keys.network(record.id)).value(json(record)).op(),
            this.ns.put(keys.name(record.name)).value(record.id).op(),
            this.ns.put(keys.vni(vni)).value(record.id).op(),
            this.ns.put(keys.netIndex(index)).value(record.id).op(),
          ],
          [
            this.ns.get(keys.name(record.name)).op(),
            this.ns.get(keys.vni(vni)).op(),
            this.ns.get(keys.network(record.id)).op(),
          ],
        );
        if (res.succeeded) return record;
        const [nameTaken, vniTaken, idTaken] = res.responses.map((r) => (r.response_range?.kvs.length ?? 0) > 0);
        // The name held by this attempt's own random id: our write, applied once already.
        if (nameTaken && res.responses[0]!.response_range!.kvs[0]!.value.toString() === record.id) return record;
        if (nameTaken) throw new StoreError('VEIL_ERR_NETWORK_NAME_TAKEN', record.name);
        if (vniTaken && spec.vni !== undefined) throw new StoreError('VEIL_ERR_VNI_TAKEN', String(spec.vni));
        if (idTaken) throw new StoreError('VEIL_ERR_NETWORK_EXISTS', record.id);
        await jitter(attempt); // lost a race for a VNI or an index, or another network appeared: re-read
      }
      throw new StoreError('VEIL_ERR_STORE_CONFLICT', 'network creation');
    });
  }

  private async findNetwork(idOrName: string): Promise<{ value: NetworkRecord; modRevision: number }> {
    // Not a possible id or name (layout.ts SEGMENT_RE): nothing to look up.
    let found = SEGMENT_RE.test(idOrName) ? await this.getOne<NetworkRecord>(keys.network(idOrName)) : null;
    if (!found && SEGMENT_RE.test(idOrName)) {
      const id = await this.ns.get(keys.name(idOrName)).string();
      if (id) found = await this.getOne<NetworkRecord>(keys.network(id));
    }
    if (!found) throw new StoreError('VEIL_ERR_NOT_FOUND', `network ${idOrName}`);
    return found;
  }

  getNetwork(idOrName: string): Promise<NetworkRecord> {
    return guard(async () => (await this.findNetwork(idOrName)).value);
  }

  listNetworks(): Promise<Listing<NetworkRecord>> {
    return this.list<NetworkRecord>(keys.networksPrefix());
  }

  async deleteNetwork(idOrName: string): Promise<void> {
    return guard(async () => {
      let id: string | undefined;
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        // After the first attempt, by the id it found: a network made since under the same name is not this one.
        const found =
          id === undefined ? await this.findNetwork(idOrName) : await this.getOne<NetworkRecord>(keys.network(id));
        if (!found) return; // gone after an attempt of ours: deleted (docs/etcd.md "Writes sent twice")
        const { value: net, modRevision } = found;
        id = net.id;
        const res = await this.rawTxn(
          [
            this.keyCompare(keys.network(net.id), 'Mod', modRevision),
            this.rangeCompare(keys.endpointsPrefix(net.id), 'Create', 'Equal', 0),
          ],
          [
            this.ns.delete().key(keys.network(net.id)).op(),
            this.ns.delete().key(keys.name(net.name)).op(),
            this.ns.delete().key(keys.vni(net.vni)).op(),
            this.ns.delete().key(keys.netIndex(net.index)).op(),
            this.ns.delete().prefix(keys.ipamPrefix(net.id)).op(),
            this.ns.delete().prefix(keys.keysPrefix(net.id)).op(),
            this.ns.delete().prefix(keys.copiesPrefix(net.id)).op(),
            this.ns.delete().prefix(keys.acksPrefix(net.id)).op(),
            this.ns.delete().key(keys.rotate(net.id)).op(),
          ],
          [this.ns.getAll().prefix(keys.endpointsPrefix(net.id)).limit(1).op()],
        );
        if (res.succeeded) return;
        const count = rev(res.responses[0]?.response_range?.count);
        if (count > 0)
          throw new StoreError('VEIL_ERR_NETWORK_HAS_ENDPOINTS', `network ${net.name} has ${count} endpoint(s)`);
        await jitter(attempt);
      }
      throw new StoreError('VEIL_ERR_STORE_CONFLICT', 'network deletion');
    });
  }

  // ---- endpoints ---------------------------------------------------------------------------

  async createEndpoint(spec: EndpointSpec): Promise<EndpointRecord> {
    return guard(async () => {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const { value: net, modRevision } = await this.findNetwork(spec.networkId);
        const { id, requestedIp } = checkEndpoint(spec, net);
        const taken = await this.keySet(keys.ipamPrefix(net.id));
        const reservation = spec.reservedBy === undefined ? undefined : addressReservation(spec.reservedBy);
        if (requestedIp !== undefined && taken.has(requestedIp) && reservation === undefined)
          throw new StoreError('VEIL_ERR_IP_TAKEN', `${requestedIp} in network ${net.name}`);
        const ip = requestedIp ?? pickFreeIp(allocRange(net.ipam), taken, attempt);
        if (ip === null)
          throw new StoreError(
            'VEIL_ERR_IPAM_EXHAUSTED',
            `network ${net.name} (${net.ipam.ipRange ?? net.ipam.subnet})`,
          );
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
        const ipFree = reservation === undefined;
        const res = await this.ns
          .if(keys.network(net.id), 'Mod', '==', modRevision)
          .and(keys.ipam(net.id, ip), ipFree ? 'Create' : 'Value', '==', ipFree ? 0 : reservation)
          .and(keys.endpoint(net.id, id), 'Create', '==', 0)
          .then(
            this.ns.put(keys.ipam(net.id, ip)).value(id),
            this.ns.put(keys.endpoint(net.id, id)).value(json(record)),
          )
          .else(this.ns.get(keys.endpoint(net.id, id)), this.ns.get(keys.ipam(net.id, ip)))
          .commit();
        if (res.succeeded) return record;
        const [epTaken, ipTaken] = res.responses.map((r) => (r.response_range?.kvs.length ?? 0) > 0);
        // This very record: our own write, applied once already (docs/etcd.md "Writes sent twice").
        if (epTaken && res.responses[0]!.response_range!.kvs[0]!.value.toString() === json(record)) return record;
        if (epTaken) throw new StoreError('VEIL_ERR_ENDPOINT_EXISTS', `${id} in network ${net.name}`);
        if (reservation !== undefined && !ipTaken)
          throw new StoreError('VEIL_ERR_NOT_FOUND', `reservation of ${requestedIp} in network ${net.name}`);
        if (ipTaken && requestedIp !== undefined)
          throw new StoreError('VEIL_ERR_IP_TAKEN', `${requestedIp} in network ${net.name}`);
        await jitter(attempt);
      }
      throw new StoreError('VEIL_ERR_STORE_CONFLICT', 'IP allocation');
    });
  }

  async requestRotation(r: RotationRequestRecord): Promise<void> {
    checkRotationRequest(r);
    return guard(async () => {
      const key = keys.rotate(r.networkId);
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const [net, current] = await Promise.all([
          this.getOne<NetworkRecord>(keys.network(r.networkId)),
          this.getOne<RotationRequestRecord>(key),
        ]);
        if (!net) throw new StoreError('VEIL_ERR_NOT_FOUND', `network ${r.networkId}`);
        // Keep the larger afterEpoch: a stale concurrent request never cancels a newer one.
        if (current && current.value.afterEpoch > r.afterEpoch) return;
        const res = await this.ns
          .if(key, 'Mod', '==', current?.modRevision ?? 0)
          .and(keys.network(r.networkId), 'Create', '>', 0)
          .then(this.ns.put(key).value(json(r)))
          .commit();
        if (res.succeeded) return;
        await jitter(attempt);
      }
      throw new StoreError('VEIL_ERR_STORE_CONFLICT', `rotation request for ${r.networkId}`);
    });
  }

  async getRotationRequest(networkId: string): Promise<RotationRequestRecord | null> {
    return guard(async () => (await this.getOne<RotationRequestRecord>(keys.rotate(networkId)))?.value ?? null);
  }

  listEndpoints(networkId?: string): Promise<Listing<EndpointRecord>> {
    return this.list<EndpointRecord>(keys.endpointsPrefix(networkId));
  }

  async deleteEndpoint(networkId: string, endpointId: string): Promise<void> {
    return guard(async () => {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const found =
          SEGMENT_RE.test(networkId) && SEGMENT_RE.test(endpointId)
            ? await this.getOne<EndpointRecord>(keys.endpoint(networkId, endpointId))
            : null;
        // Gone after an attempt of ours: deleted, by it (its answer lost) or by another; either way done.
        if (!found && attempt > 0) return;
        if (!found) throw new StoreError('VEIL_ERR_NOT_FOUND', `endpoint ${endpointId} in network ${networkId}`);
        const ep = found.value;
        const res = await this.ns
          .if(keys.endpoint(networkId, endpointId), 'Mod', '==', found.modRevision)
          .then(
            this.ns.delete().key(keys.endpoint(networkId, endpointId)),
            this.ns.delete().key(keys.ipam(networkId, ep.ipv4)),
          )
          .commit();
        if (res.succeeded) return;
        await jitter(attempt);
      }
      throw new StoreError('VEIL_ERR_STORE_CONFLICT', 'endpoint deletion');
    });
  }

  async updateEndpoint(networkId: string, endpointId: string, changes: EndpointChanges): Promise<EndpointRecord> {
    return guard(async () => {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const { value: net } = await this.findNetwork(networkId);
        const found = SEGMENT_RE.test(endpointId)
          ? await this.getOne<EndpointRecord>(keys.endpoint(net.id, endpointId))
          : null;
        if (!found) throw new StoreError('VEIL_ERR_NOT_FOUND', `endpoint ${endpointId} in network ${net.name}`);
        const next = changedEndpoint(found.value, changes, net);
        // Already so (a write of ours applied once already, docs/etcd.md "Writes sent twice"): done.
        if (attempt > 0 && json(next) === json(found.value)) return next;
        const res = await this.ns
          .if(keys.endpoint(net.id, endpointId), 'Mod', '==', found.modRevision)
          .then(this.ns.put(keys.endpoint(net.id, endpointId)).value(json(next)))
          .commit();
        if (res.succeeded) return next;
        await jitter(attempt);
      }
      throw new StoreError('VEIL_ERR_STORE_CONFLICT', 'endpoint update');
    });
  }

  async reserveAddress(networkId: string, holder: string, ipv4?: string): Promise<string> {
    const value = addressReservation(holder);
    return guard(async () => {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const { value: net, modRevision } = await this.findNetwork(networkId);
        const { requestedIp } = checkEndpoint(
          { networkId, name: 'reservation', hostId: holder, ...(ipv4 ? { ipv4 } : {}) },
          net,
        );
        const taken = await this.keySet(keys.ipamPrefix(net.id));
        if (requestedIp !== undefined && taken.has(requestedIp))
          throw new StoreError('VEIL_ERR_IP_TAKEN', `${requestedIp} in network ${net.name}`);
        const ip = requestedIp ?? pickFreeIp(allocRange(net.ipam), taken, attempt);
        if (ip === null)
          throw new StoreError(
            'VEIL_ERR_IPAM_EXHAUSTED',
            `network ${net.name} (${net.ipam.ipRange ?? net.ipam.subnet})`,
          );
        const res = await this.ns
          .if(keys.network(net.id), 'Mod', '==', modRevision)
          .and(keys.ipam(net.id, ip), 'Create', '==', 0)
          .then(this.ns.put(keys.ipam(net.id, ip)).value(value))
          .commit();
        if (res.succeeded) return ip;
        const heldBy = await this.ns.get(keys.ipam(net.id, ip)).string();
        // Free when read and this holder's now: our write, applied once already; another would leak it.
        if (heldBy === value) return ip;
        if (requestedIp !== undefined && heldBy !== null)
          throw new StoreError('VEIL_ERR_IP_TAKEN', `${requestedIp} in network ${net.name}`);
        await jitter(attempt);
      }
      throw new StoreError('VEIL_ERR_STORE_CONFLICT', 'IP reservation');
    });
  }

  async releaseAddress(networkId: string, ipv4: string, holder: string, revision?: number): Promise<void> {
    const value = addressReservation(holder);
    if (!SEGMENT_RE.test(networkId) || !SEGMENT_RE.test(ipv4)) return;
    return guard(async () => {
      // Only while it is still this holder's reservation: an endpoint's address is freed with the endpoint.
      let txn = this.ns.if(keys.ipam(networkId, ipv4), 'Value', '==', value);
      if (revision !== undefined) txn = txn.and(keys.ipam(networkId, ipv4), 'Create', '==', revision);
      await txn.then(this.ns.delete().key(keys.ipam(networkId, ipv4))).commit();
    });
  }

  async listReservations(networkId: string, holder: string): Promise<Reservation[]> {
    const value = addressReservation(holder);
    if (!SEGMENT_RE.test(networkId)) return [];
    return guard(async () => {
      const prefix = keys.ipamPrefix(networkId);
      const { kvs } = await this.getAll(prefix);
      return kvs
        .filter((kv) => kv.value.toString() === value)
        .map((kv) => ({ ipv4: kv.key.toString().slice(prefix.length), revision: rev(kv.create_revision) }))
        .sort((a, b) => compareIpv4(a.ipv4, b.ipv4));
    });
  }

  // ---- key epochs and acks -------------------------------------------------------------------

  private fence(leader: Leadership): EtcdLeadership {
    if (!(leader instanceof EtcdLeadership)) throw new TypeError('leadership from another store');
    if (leader.lost.aborted) throw new StoreError('VEIL_ERR_NOT_LEADER', 'leadership already lost');
    return leader;
  }

  /**
   * A leader write, in one transaction fenced on the leader's key AND on the network
   * (networks/<id> exists): a leader that read the network just before `network rm` must
   * not write keys/<id>/ back after the delete, where every installer would retry it for
   * ever. A refusal says which: the leader key gone (VEIL_ERR_NOT_LEADER, and the
   * leadership ends), else the network gone (VEIL_ERR_NOT_FOUND; the leader goes on).
   */
  private async fencedEpochWrite(l: EtcdLeadership, networkId: string, ops: IOperation[]): Promise<void> {
    const network = keys.network(networkId);
    return guard(async () => {
      const started = Date.now();
      const res = await this.ns
        .if(l.fenceKey, 'Create', '==', l.fenceRevision)
        .and(network, 'Create', '>', 0)
        .then(...ops)
        .else(this.ns.get(l.fenceKey))
        .commit();
      const fence = res.succeeded ? undefined : res.responses[0]?.response_range?.kvs[0];
      if (!res.succeeded && (!fence || rev(fence.create_revision) !== l.fenceRevision)) {
        l.lose('leader key gone');
        throw new StoreError('VEIL_ERR_NOT_LEADER', 'leader key gone; write refused');
      }
      l.confirmed(started); // the fence held either way
      if (!res.succeeded)
        throw new StoreError('VEIL_ERR_NOT_FOUND', `network ${networkId} (deleted); epoch write refused`);
    });
  }

  async putEpoch(leader: Leadership, record: KeyEpochRecord, copies: WrappedCopies = {}): Promise<void> {
    checkEpoch(record);
    checkCopies(copies);
    const l = this.fence(leader);
    const { networkId, epoch } = record;
    const recordKey = keys.keyEpoch(networkId, epoch);
    const epochCopies = keys.copiesPrefix(networkId, epoch);
    // A first write is a publish: copies of this epoch number are leftovers of one that never finished.
    // Activating or retiring rewrites a record the leader read, so they skip the read (one round trip
    // less on a rotation's path).
    const fresh = record.state === 'published' && (await guard(() => this.ns.get(recordKey).exists())) === false;
    const puts = Object.entries(copies).map(([hostId, wrapped]) =>
      this.ns.put(keys.copy(networkId, epoch, hostId)).value(json({ wrapped })),
    );
    // etcd refuses a put and a delete of the same key in one transaction: the leftovers go on their own.
    if (fresh && puts.length > 0) await this.fencedEpochWrite(l, networkId, [this.ns.delete().prefix(epochCopies)]);
    // The batches are independent (etcd commits concurrent ones together); the record waits for all.
    const batches: Array<Promise<void>> = [];
    for (let i = 0; i < puts.length; i += COPIES_PER_TXN)
      batches.push(this.fencedEpochWrite(l, networkId, puts.slice(i, i + COPIES_PER_TXN)));
    await Promise.all(batches);
    await this.fencedEpochWrite(l, networkId, [
      ...(fresh && puts.length === 0 ? [this.ns.delete().prefix(epochCopies)] : []),
      this.ns.put(recordKey).value(json(record)),
      // No one uses a retired epoch: its copies go with it.
      ...(record.state === 'retired' ? [this.ns.delete().prefix(epochCopies)] : []),
    ]);
  }

  async deleteEpoch(leader: Leadership, networkId: string, epoch: number): Promise<void> {
    const l = this.fence(leader);
    await this.fencedEpochWrite(l, networkId, [
      this.ns.delete().key(keys.keyEpoch(networkId, epoch)),
      this.ns.delete().prefix(keys.copiesPrefix(networkId, epoch)),
      this.ns.delete().prefix(keys.acksPrefix(networkId, epoch)),
    ]);
  }

  async getCopy(networkId: string, epoch: number, hostId: string): Promise<string | null> {
    return guard(async () => {
      const copy = (await this.getOne<unknown>(keys.copy(networkId, epoch, hostId)))?.value;
      return isWrappedCopy(copy) ? copy.wrapped : null;
    });
  }

  async listCopies(networkId: string): Promise<Listing<CopyRef>> {
    return guard(async () => {
      const { keys: found, revision } = await this.keysUnder(keys.copiesPrefix(networkId));
      return { items: found.flatMap((k) => copyRef(k) ?? []), revision };
    });
  }

  async getEpochs(networkId: string): Promise<Listing<KeyEpochRecord>> {
    const l = await this.list<KeyEpochRecord>(keys.keysPrefix(networkId));
    l.items.sort((a, b) => a.epoch - b.epoch);
    return l;
  }

  async ack(host: HostLease, record: AckRecord): Promise<void> {
    if (!(host instanceof EtcdHostLease)) throw new TypeError('host lease from another store');
    checkAck(record, host.hostId);
    if (host.lost.aborted) throw new StoreError('VEIL_ERR_STORE_UNAVAILABLE', 'host lease lost');
    await guard(async () => {
      await host.lease
        .put(keys.ack(record.networkId, record.epoch, record.hostId))
        .value(json(record))
        .exec();
    }).catch((err: unknown) => {
      throw err instanceof EtcdLeaseInvalidError
        ? new StoreError('VEIL_ERR_STORE_UNAVAILABLE', 'host lease expired', { cause: err })
        : err;
    });
  }

  listAcks(networkId: string, epoch: number): Promise<Listing<AckRecord>> {
    return this.list<AckRecord>(keys.acksPrefix(networkId, epoch));
  }

  // ---- election ----------------------------------------------------------------------------

  election(name: string = KEYSCHEDULE_ELECTION, ttlSeconds = 10): LeaderElection {
    const election: Election = this.ns.election(name, ttlSeconds);
    this.elections.add(election);
    const electionPrefix = keys.electionPrefix(name);
    const ns = this.ns;
    const campaigns = this.campaigns;
    return {
      campaign(value, opts = {}) {
        return new Promise<Leadership>((resolve, reject) => {
          if (opts.signal?.aborted) return reject(opts.signal.reason);
          const campaign = election.campaign(value);
          campaigns.add(campaign);
          // A campaign that ends without a leadership is resigned here; a leadership resigns its own.
          const end = (): void => {
            campaign
              .resign()
              .catch(() => undefined)
              .finally(() => campaigns.delete(campaign));
          };
          let leadership: EtcdLeadership | null = null;
          const onAbort = (): void => {
            end();
            reject(opts.signal?.reason);
          };
          opts.signal?.addEventListener('abort', onAbort, { once: true });
          campaign.on('error', (err) => {
            opts.signal?.removeEventListener('abort', onAbort);
            if (leadership) leadership.lose('campaign failed', err);
            else {
              end();
              reject(unavailable(err) ?? err);
            }
          });
          campaign.on('elected', () => {
            opts.signal?.removeEventListener('abort', onAbort);
            (async () => {
              const abs = await campaign.getCampaignKey();
              const fenceKey = electionPrefix + abs.slice(abs.lastIndexOf('/') + 1);
              const kv = (await ns.get(fenceKey).exec()).kvs[0];
              if (!kv) throw new StoreError('VEIL_ERR_NOT_LEADER', 'election key vanished as it was won');
              leadership = new EtcdLeadership(value, campaign, fenceKey, rev(kv.create_revision), ns, ttlSeconds, () =>
                campaigns.delete(campaign),
              );
              resolve(leadership);
            })().catch((err: unknown) => {
              end();
              reject(unavailable(err) ?? err);
            });
          });
        });
      },
      leader: () => guard(() => election.leader()),
      async observe(onChange) {
        const observer = await guard(() => election.observe());
        onChange(observer.leader());
        observer.on('change', onChange);
        observer.on('error', () => onChange(undefined));
        return { cancel: () => observer.cancel() };
      },
    };
  }

  // ---- watch -------------------------------------------------------------------------------

  /** Watches inside the shared layout share one etcd watch (SharedWatch, docs/etcd.md "Watches"). */
  async watch(range: KeyRange, fromRevision: number, handler: WatchHandler): Promise<WatchHandle> {
    if (rangeWithin(range, SHARED_RANGE)) {
      const sub = this.shared.subscribe(range, fromRevision, handler);
      if (sub) return sub;
    }
    return this.openWatch(range, fromRevision, handler);
  }

  private openWatch(range: KeyRange, fromRevision: number, handler: WatchHandler): EtcdWatch {
    const w = new EtcdWatch(this.ns, range, fromRevision, handler, () => this.watches.delete(w));
    this.watches.add(w);
    w.start();
    return w;
  }

  // ---- maintenance (tests, diagnostics) ---------------------------------------------------------

  /** What this client keeps open: each must come back down when what it stands for ends (GET /status). */
  figures(): StoreFigures {
    const streams = this.watches.size;
    return {
      watches: streams - (this.shared.streaming ? 1 : 0) + this.shared.subscribers,
      etcdWatches: streams,
      leases: this.leases.size,
      campaigns: this.campaigns.size,
    };
  }

  async dump(): Promise<Map<string, string>> {
    return guard(async () => {
      const { kvs } = await this.getAll('');
      return new Map(kvs.map((kv) => [kv.key.toString(), kv.value.toString()]));
    });
  }

  /** The current revision of the whole etcd keyspace. */
  async revision(): Promise<number> {
    return guard(async () => rev((await this.ns.get('\0').exec()).header.revision));
  }

  /** Compacts etcd's history up to `revision` (what an operator's auto-compaction does). */
  async compact(revision: number): Promise<void> {
    await guard(() => this.client.kv.compact({ revision, physical: true })).catch((err: unknown) => {
      // Compacted to there already (by an operator, or by this very call sent twice): done.
      if (!/required revision has been compacted/.test((err as Error).message)) throw err;
    });
  }

  /**
   * Stops this client like a process exit: watches end, host leases stop being kept
   * alive (hosts/<id> and its acks expire after the TTL; call HostLease.revoke() first
   * for a clean leave), and campaigns resign so the next candidate takes over at once.
   */
  async close(): Promise<void> {
    await this.shared.close();
    await Promise.all([...this.watches].map((w) => w.cancel()));
    for (const lease of this.leases) lease.release();
    await Promise.all([...this.campaigns].map((c) => c.resign().catch(() => undefined)));
    await Promise.all([...this.elections].map((e) => cancelLeftoverWatches(e)));
    this.client.close();
  }
}

/**
 * etcd3 (1.1.2) bug: a campaign that is not leader waits for its predecessor's key to go through a
 * watch in the election's namespace (Campaign.waitForElected → waitForDeletes), and resign() does
 * not cancel it. That watch stream outlives Etcd3.close() and keeps its HTTP/2 session, so a
 * gateway that stopped while another host led the key schedule never exited (SIGTERM, then the
 * supervisor's SIGKILL). The watchers are only reachable through etcd3's private fields.
 */
async function cancelLeftoverWatches(election: Election): Promise<void> {
  const manager = (
    election as unknown as { namespace?: { watchManager?: { watchers?: Array<{ cancel(): Promise<void> }> } } }
  ).namespace?.watchManager;
  const cancelled = Promise.all([...(manager?.watchers ?? [])].map((w) => w.cancel().catch(() => undefined)));
  // A cancel waits for etcd's answer; an unreachable etcd must not hold close() up.
  await Promise.race([cancelled, new Promise((r) => setTimeout(r, 2000).unref())]);
}

/**
 * One watch. etcd3 re-attaches watchers itself after a disconnect, but it resumes
 * from the header revision of the last response (or of the create response), which
 * can skip events still in flight. So on a disconnect this cancels the etcd3
 * watcher and opens a new one from the last revision it delivered, and drops any
 * event at or below it (at-most-once per revision, in order).
 */
class EtcdWatch implements WatchHandle {
  private last: number;
  private watcher: Watcher | null = null;
  private cancelled = false;
  private backoffMs = 50;
  private timer: NodeJS.Timeout | null = null;
  private disconnected = false;

  constructor(
    private readonly ns: Namespace,
    private readonly range: KeyRange,
    fromRevision: number,
    private readonly handler: WatchHandler,
    private readonly onCancel: () => void,
  ) {
    this.last = fromRevision - 1;
  }

  get lastRevision(): number {
    return this.last;
  }

  start(): void {
    if (this.cancelled) return;
    const builder = this.ns.watch();
    const w = (typeof this.range === 'string' ? builder.prefix(this.range) : builder.inRange(this.range))
      .withPreviousKV()
      .startRevision(String(this.last + 1))
      .watcher();
    this.watcher = w;
    w.on('connected', () => {
      this.backoffMs = 50;
      if (!this.disconnected) return;
      this.disconnected = false;
      this.handler.onReconnected?.();
    });
    w.on('data', (res: IWatchResponse) => this.deliver(res));
    w.on('disconnected', (err) => {
      this.reportDisconnected(err);
      this.restart(w);
    });
    w.on('error', (err) => this.onError(w, err));
  }

  private deliver(res: IWatchResponse): void {
    const floor = this.last;
    const events: WatchEvent[] = [];
    for (const ev of res.events) {
      const revision = rev(ev.kv.mod_revision);
      if (revision <= floor) continue; // already delivered before a reconnect
      const isPut = ev.type === 'Put';
      const valueBuf = isPut ? ev.kv.value : ev.prev_kv?.value;
      events.push({
        type: isPut ? 'put' : 'delete',
        key: ev.kv.key.toString(),
        value: decodeLoose(valueBuf),
        revision,
      });
    }
    if (events.length === 0) return;
    this.last = events[events.length - 1]!.revision;
    this.handler.onEvents(events);
  }

  private reportDisconnected(err: Error): void {
    this.disconnected = true;
    this.handler.onDisconnected?.(err);
  }

  /** Detach the old watcher, then open a new one from the last delivered revision, with backoff. */
  private restart(old: Watcher | null): void {
    if (old) {
      if (this.watcher !== old) return;
      this.watcher = null;
      old.removeAllListeners();
      old.on('error', () => undefined);
      old.cancel().catch(() => undefined);
    }
    if (this.cancelled || this.timer) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(2000, this.backoffMs * 2);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.start();
    }, delay);
  }

  /** etcd canceled the watch; the usual reason is a compaction past our revision: resync. */
  private onError(w: Watcher, err: Error): void {
    if (this.watcher !== w) return;
    this.watcher = null;
    w.removeAllListeners();
    (async () => {
      try {
        await this.ns
          .get('\0')
          .revision(this.last + 1)
          .exec();
        // Not compacted (the revision is readable or in the future): just reopen.
        this.restart(null);
      } catch (probe) {
        if (probe instanceof Error && /compacted/.test(probe.message)) {
          const all = this.ns.getAll();
          const res = await (typeof this.range === 'string' ? all.prefix(this.range) : all.inRange(this.range)).exec();
          const revision = rev(res.header.revision);
          this.last = revision;
          this.handler.onResync(
            res.kvs.map((kv) => ({ key: kv.key.toString(), value: decodeLoose(kv.value) })),
            revision,
          );
          this.start();
        } else {
          this.reportDisconnected(err);
          this.restart(null);
        }
      }
    })().catch((e: unknown) => {
      // etcd unreachable while resyncing: try again later from the same revision.
      this.reportDisconnected(e instanceof Error ? e : new Error(String(e)));
      this.restart(null);
    });
  }

  async cancel(): Promise<void> {
    this.cancelled = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const w = this.watcher;
    this.watcher = null;
    this.onCancel();
    if (w) {
      w.removeAllListeners();
      w.on('error', () => undefined);
      await w.cancel().catch(() => undefined);
    }
  }
}
