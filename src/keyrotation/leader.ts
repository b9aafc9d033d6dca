import { randomBytes as nodeRandomBytes } from 'node:crypto';
import { SecretKey } from '../crypto/secret.js';
import type { ErrorCode } from '../errors.js';
import { isStoreError } from '../store/errors.js';
import { keys, parseKey } from '../store/layout.js';
import type { HostRecord, KeyEpochRecord, Leadership, NetworkRecord, Store, WatchEvent } from '../store/types.js';
import type { RotationRequests } from './requests.js';
import {
  memberHosts,
  nextAction,
  scheduleConfig,
  type Action,
  type ScheduleConfig,
  type ScheduleInput,
} from './schedule.js';
import { errorFields, noLog, sleep, systemClock, type Clock, type LogFn } from './seams.js';
import { EPOCH_SECRET_LENGTH, unwrapForSelf, wrapForHost, type HostIdentity } from './wrapping.js';

/*
 * The key-schedule leader (docs/keys.md "Leader"). Every non-Windows host runs one; the
 * etcd election picks who leads. While leader, one loop per encrypted network reads
 * epochs, acks, hosts and the rotation request, asks schedule.ts for the next action,
 * and performs it with a fenced write (Store.putEpoch / deleteEpoch fail with
 * VEIL_ERR_NOT_LEADER once the leader key is gone, and with VEIL_ERR_NOT_FOUND once the
 * network is gone: that network's loop stops, the term goes on), until the answer is `wait`.
 *
 * It wakes on watch events (keys/, ~/acks/, hosts/, networks/, rotation requests) and on
 * one timer per network at `wait.until`; it never polls. When `leadership.lost` aborts
 * it stops at once (docs/etcd.md "Election"), resigns the term (its election key goes) and
 * campaigns again. A new leader reads the epochs and continues the schedule where it
 * is: nothing is kept between terms but what etcd holds, so there is nothing to restart.
 *
 * The leader is a member itself, so it recovers a live epoch's secret from its own
 * wrapped copy to rewrap it for a host that joined later. When it holds no copy (it
 * joined after the epoch and the previous leader died before rewrapping), the epoch is
 * "unrecoverable" for this term, and the schedule rotates instead.
 */

/** Logged (never thrown) when an epoch's secret cannot be recovered with this host's key. */
const KEY_UNAVAILABLE: ErrorCode = 'VEIL_ERR_KEY_UNAVAILABLE';

export interface KeyScheduleLeaderOptions {
  store: Store;
  requests: RotationRequests;
  /** This host: its id (the election value) and X25519 private key (to read its own copy). */
  self: HostIdentity;
  config?: Partial<ScheduleConfig>;
  clock?: Clock;
  /** Source of epoch secrets; node:crypto's CSPRNG unless a test injects one. */
  randomBytes?: (n: number) => Uint8Array;
  log?: LogFn;
  electionName?: string;
  electionTtlSeconds?: number;
  /** Backoff after a failed step or campaign (etcd unreachable). */
  retryMs?: number;
}

export interface NetworkScheduleStatus {
  networkId: string;
  /** What the schedule waits for, and until when (null: until etcd changes). */
  waiting: { until: number | null; reason: string } | null;
  lastAction: { kind: Exclude<Action['kind'], 'wait'>; epoch: number; at: number; detail?: string } | null;
  /** Activations that went ahead without every member's ack (counted and logged, docs/keys.md "Leader"). */
  ackTimeouts: number;
  /** The last failure (e.g. etcd unreachable), cleared by the next successful step. */
  problem: string | null;
}

export interface LeaderStatus {
  hostId: string;
  leader: boolean;
  /** When this term began (null when not leader). */
  since: number | null;
  networks: NetworkScheduleStatus[];
}

export const DEFAULT_RETRY_MS = 1000;
/** Copies wrapped between two turns of the event loop (about 25 ms of work). */
const WRAPS_PER_TURN = 100;
/** A run that needs more actions than this is not converging: back off and look again. */
const MAX_ACTIONS_PER_RUN = 32;

interface Deps {
  store: Store;
  requests: RotationRequests;
  self: HostIdentity;
  config: ScheduleConfig;
  clock: Clock;
  randomBytes: (n: number) => Uint8Array;
  log: LogFn;
  retryMs: number;
}

export class KeyScheduleLeader {
  readonly #d: Deps;
  readonly #electionName: string | undefined;
  readonly #electionTtl: number | undefined;
  readonly #stop = new AbortController();
  #running: Promise<void> | null = null;
  #term: LeaderTerm | null = null;

  constructor(options: KeyScheduleLeaderOptions) {
    this.#d = {
      store: options.store,
      requests: options.requests,
      self: options.self,
      config: scheduleConfig(options.config),
      clock: options.clock ?? systemClock,
      randomBytes: options.randomBytes ?? ((n) => new Uint8Array(nodeRandomBytes(n))),
      log: options.log ?? noLog,
      retryMs: options.retryMs ?? DEFAULT_RETRY_MS,
    };
    this.#electionName = options.electionName;
    this.#electionTtl = options.electionTtlSeconds;
  }

  get config(): ScheduleConfig {
    return { ...this.#d.config };
  }

  /** Campaigns in the background; leads whenever elected. Never rejects. */
  start(): void {
    this.#running ??= this.#campaignLoop().catch((err: unknown) =>
      this.#d.log('key schedule leader stopped by an error', errorFields(err)),
    );
  }

  /** Stops leader work, resigns, and returns when nothing of it runs any more. */
  async stop(): Promise<void> {
    this.#stop.abort();
    this.#term?.end();
    await this.#running;
  }

  get isLeader(): boolean {
    return this.#term?.active ?? false;
  }

  status(): LeaderStatus {
    const term = this.#term;
    return {
      hostId: this.#d.self.hostId,
      leader: term?.active ?? false,
      since: term?.active ? term.since : null,
      networks: term?.active ? term.networkStatus() : [],
    };
  }

  async #campaignLoop(): Promise<void> {
    const { store, self, log, clock, retryMs } = this.#d;
    const signal = this.#stop.signal;
    const election = store.election(this.#electionName, this.#electionTtl);
    while (!signal.aborted) {
      let leadership: Leadership;
      try {
        leadership = await election.campaign(self.hostId, { signal });
      } catch (err) {
        if (signal.aborted) break;
        log('key schedule campaign failed', errorFields(err));
        await sleep(clock, retryMs, signal);
        continue;
      }
      if (!signal.aborted) {
        const term = new LeaderTerm(this.#d, leadership);
        this.#term = term;
        await term.run();
        this.#term = null;
      }
      // Whatever ended the term (stop(), a fenced write refused, or the store giving up on its own
      // after an event-loop stall while etcd still keeps the campaign's lease alive), resign before
      // campaigning again: a term's key left in the election queue would stay first in it, and every
      // later campaign, here or on any other host, would wait behind it for ever.
      await leadership
        .resign()
        .catch((err: unknown) =>
          log('key schedule could not resign a lost term (its lease expires after the TTL)', errorFields(err)),
        );
    }
  }
}

/** Runs `fn` one at a time; a kick while it runs makes it run once more afterwards. */
class Serial {
  #running = false;
  #again = false;
  constructor(
    private readonly fn: () => Promise<void>,
    private readonly onError: (err: unknown) => void,
  ) {}
  kick(): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    void (async () => {
      try {
        do {
          this.#again = false;
          await this.fn().catch(this.onError);
        } while (this.#again);
      } finally {
        this.#running = false;
      }
    })();
  }
}

/** One period of leadership: watches, one loop per encrypted network, all ended when leadership is lost. */
class LeaderTerm {
  readonly since: number;
  readonly #ended = new AbortController();
  readonly #loops = new Map<string, NetworkLoop>();
  readonly #handles: Array<{ cancel(): Promise<void> }> = [];
  readonly #networks: Serial;
  /** Frees the host indexes of hosts gone for good (Store.reclaimHostIndexes, docs/etcd.md "Host indexes"). */
  readonly #indexes: Serial;

  constructor(
    readonly d: Deps,
    readonly leadership: Leadership,
  ) {
    this.since = d.clock.now();
    this.#networks = new Serial(
      () => this.#refreshNetworks(),
      (err) => this.d.log('key schedule failed', errorFields(err)),
    );
    this.#indexes = new Serial(
      () => this.#reclaimIndexes(),
      (err) =>
        this.d.log('host indexes could not be reclaimed; retried at the next host or epoch change', errorFields(err)),
    );
    leadership.onLost((reason) => {
      if (!this.#ended.signal.aborted) d.log('key schedule leadership lost; leader work stops', errorFields(reason));
      this.end();
    });
  }

  get active(): boolean {
    return !this.#ended.signal.aborted;
  }
  get signal(): AbortSignal {
    return this.#ended.signal;
  }

  end(): void {
    if (this.#ended.signal.aborted) return;
    this.#ended.abort();
    for (const loop of this.#loops.values()) loop.close();
  }

  networkStatus(): NetworkScheduleStatus[] {
    return [...this.#loops.values()].map((l) => l.status()).sort((a, b) => (a.networkId < b.networkId ? -1 : 1));
  }

  async run(): Promise<void> {
    this.d.log('key schedule leader elected', { host: this.d.self.hostId });
    const ended = new Promise<void>((resolve) =>
      this.signal.addEventListener('abort', () => resolve(), { once: true }),
    );
    while (this.active) {
      try {
        await this.#watch();
        break;
      } catch (err) {
        await this.#cancelWatches();
        if (this.lostBy(err)) break;
        this.d.log('key schedule cannot watch etcd; retrying', errorFields(err));
        await sleep(this.d.clock, this.d.retryMs, this.signal);
      }
    }
    await ended;
    await this.#cancelWatches();
  }

  /** True (and the term ends) when `err` or the leadership says this host no longer leads. */
  lostBy(err: unknown): boolean {
    if (isStoreError(err, 'VEIL_ERR_NOT_LEADER') || this.leadership.lost.aborted) this.end();
    return !this.active;
  }

  /** List, then watch from the revision just read (docs/etcd.md "Watches"); then run every network once. */
  async #watch(): Promise<void> {
    const { store, requests } = this.d;
    const listing = await store.listNetworks();
    const handler = {
      onEvents: (events: WatchEvent[]) => this.#route(events),
      onResync: () => this.#kickEverything(),
    };
    for (const prefix of [keys.keysPrefix(), keys.acksPrefix(), keys.hostsPrefix(), keys.networksPrefix()]) {
      this.#handles.push(await store.watch(prefix, listing.revision + 1, handler));
      if (!this.active) return;
    }
    this.#handles.push(await requests.watch((networkId) => this.#loops.get(networkId)?.kick()));
    if (!this.active) return;
    this.#applyNetworks(listing.items);
    this.#indexes.kick(); // hosts that left while nobody led
  }

  async #cancelWatches(): Promise<void> {
    await Promise.all(this.#handles.splice(0).map((h) => h.cancel().catch(() => undefined)));
  }

  #route(events: WatchEvent[]): void {
    if (!this.active) return;
    const touched = new Set<string>();
    /** Loops whose awaited acks are all in, with nothing else new: they act on what they read last. */
    const complete = new Set<string>();
    let hosts = false;
    let gone = false; // a host left, or an epoch that may have named one went
    for (const e of events) {
      const k = parseKey(e.key);
      if (k?.kind === 'ack') {
        const counted = this.#loops.get(k.networkId)?.countAck(e, k.epoch, k.hostId);
        if (counted === 'complete') complete.add(k.networkId);
        else if (counted !== 'counted') touched.add(k.networkId);
      } else if (k?.kind === 'keyEpoch') touched.add(k.networkId);
      else if (k?.kind === 'host') hosts = true;
      else if (k?.kind === 'network') this.#networks.kick();
      if (e.type === 'delete' && (k?.kind === 'host' || k?.kind === 'keyEpoch')) gone = true;
    }
    if (gone) this.#indexes.kick();
    if (hosts) for (const loop of this.#loops.values()) loop.kick();
    else for (const id of touched) this.#loops.get(id)?.kick();
    for (const id of complete) this.#loops.get(id)?.kickComplete();
  }

  #kickEverything(): void {
    if (!this.active) return;
    this.#networks.kick();
    for (const loop of this.#loops.values()) loop.kick();
  }

  async #reclaimIndexes(): Promise<void> {
    if (!this.active) return;
    const freed = await this.d.store.reclaimHostIndexes();
    if (freed.length > 0)
      this.d.log('host indexes freed', {
        indexes: freed.map((c) => `${c.index}:${c.hostId}`).slice(0, 20),
        count: freed.length,
      });
  }

  async #refreshNetworks(): Promise<void> {
    if (!this.active) return;
    try {
      this.#applyNetworks((await this.d.store.listNetworks()).items);
    } catch (err) {
      if (this.lostBy(err)) return;
      this.d.log('key schedule cannot list networks; retrying', errorFields(err));
      await sleep(this.d.clock, this.d.retryMs, this.signal);
      this.#networks.kick();
    }
  }

  #applyNetworks(networks: NetworkRecord[]): void {
    if (!this.active) return;
    const encrypted = new Set(networks.filter((n) => n.encrypted).map((n) => n.id));
    for (const [id, loop] of this.#loops) {
      if (encrypted.has(id)) continue;
      loop.close();
      this.#loops.delete(id);
    }
    for (const id of encrypted) {
      if (this.#loops.has(id)) continue;
      const loop = new NetworkLoop(id, this);
      this.#loops.set(id, loop);
      loop.kick();
    }
  }

  forget(loop: NetworkLoop): void {
    if (this.#loops.get(loop.networkId) === loop) this.#loops.delete(loop.networkId);
    loop.close();
  }
}

/** What one step read: the schedule's input and the records it acts on. */
interface Snapshot {
  input: ScheduleInput;
  epochs: Map<number, KeyEpochRecord>;
  members: Map<string, HostRecord>;
}

class NetworkLoop {
  readonly #serial: Serial;
  /** Epochs whose secret this leader holds no copy of (this term). */
  readonly #unrecoverable = new Set<number>();
  /** Hosts (id and public key) whose key cannot be wrapped for; left out of `members` so the schedule does not spin. */
  readonly #unusableKeys = new Set<string>();
  #cancelTimer: (() => void) | null = null;
  /**
   * While the schedule waits for acks: the members still missing, with the incarnation each must ack
   * with, and the read the wait came from. Acks that leave one missing change nothing, so they are
   * counted here instead of read again: at 1,000 hosts every read lists every host. When the last one
   * comes and nothing else did, that read plus the acks is the state, and the loop acts on it without
   * reading again (docs/keys.md "Leader"). Any other kick drops it.
   */
  #awaiting: {
    epoch: number;
    missing: Map<string, string>;
    /** The read's acks of the epoch, and those counted since (what `snap` holds). */
    acked: Set<string>;
    snap: Snapshot;
    complete: boolean;
  } | null = null;
  #closed = false;
  #waiting: NetworkScheduleStatus['waiting'] = null;
  #lastAction: NetworkScheduleStatus['lastAction'] = null;
  #ackTimeouts = 0;
  #problem: string | null = null;

  constructor(
    readonly networkId: string,
    private readonly term: LeaderTerm,
  ) {
    this.#serial = new Serial(
      () => this.#run(),
      (err) => term.d.log('key schedule failed', { network: networkId, ...errorFields(err) }),
    );
  }

  /** Runs the loop from a fresh read. */
  kick(): void {
    this.#awaiting = null;
    if (!this.#closed) this.#serial.kick();
  }

  /** Runs the loop from its last read and the acks counted since (countAck said 'complete'). */
  kickComplete(): void {
    if (!this.#closed) this.#serial.kick();
  }

  /**
   * An ack event while the schedule waits for acks: 'counted' when it only takes a missing member off
   * the list (or names none), 'complete' when it was the last one, 'read' when the loop must read again.
   */
  countAck(event: WatchEvent, epoch: number, hostId: string): 'counted' | 'complete' | 'read' {
    const awaiting = this.#awaiting;
    if (!awaiting || awaiting.complete || event.type !== 'put' || epoch !== awaiting.epoch) return 'read';
    const incarnation = awaiting.missing.get(hostId);
    // Counted in the last read already, or not a member of it (its host's own event reads again).
    if (incarnation === undefined) return 'counted';
    if ((event.value as { incarnation?: unknown } | null)?.incarnation !== incarnation) return 'read';
    awaiting.missing.delete(hostId);
    awaiting.acked.add(hostId);
    if (awaiting.missing.size > 0) return 'counted';
    awaiting.complete = true;
    return 'complete';
  }

  close(): void {
    this.#closed = true;
    this.#cancelTimer?.();
    this.#cancelTimer = null;
  }

  status(): NetworkScheduleStatus {
    return {
      networkId: this.networkId,
      waiting: this.#waiting,
      lastAction: this.#lastAction,
      ackTimeouts: this.#ackTimeouts,
      problem: this.#problem,
    };
  }

  get #stopped(): boolean {
    return this.#closed || !this.term.active;
  }

  /** Acts until the schedule says wait, then arms one timer. Never throws. */
  async #run(): Promise<void> {
    const { clock, log, retryMs } = this.term.d;
    this.#cancelTimer?.();
    this.#cancelTimer = null;
    let counted = this.#awaiting?.complete ? this.#awaiting.snap : null;
    this.#awaiting = null;
    for (let i = 0; i < MAX_ACTIONS_PER_RUN; i++) {
      if (this.#stopped) return;
      try {
        const snap = counted ? { ...counted, input: { ...counted.input, now: clock.now() } } : await this.#read();
        counted = null;
        if (!snap || this.#stopped) return;
        const action = nextAction(snap.input);
        if (action.kind === 'wait') {
          this.#waiting = { until: action.until, reason: action.reason };
          if (action.acks) {
            const { epoch, missing } = action.acks;
            const acked = new Set(snap.input.acks.get(epoch));
            this.#awaiting = {
              epoch,
              missing: new Map(missing.map((id) => [id, snap.members.get(id)?.incarnation ?? ''])),
              acked,
              snap: { ...snap, input: { ...snap.input, acks: new Map([...snap.input.acks, [epoch, acked]]) } },
              complete: false,
            };
          }
          this.#problem = null;
          if (action.until !== null) this.#arm(action.until - clock.now());
          return;
        }
        this.#waiting = null;
        await this.#perform(action, snap);
        this.#problem = null;
      } catch (err) {
        if (this.term.lostBy(err)) return;
        if (isStoreError(err, 'VEIL_ERR_NOT_FOUND')) {
          // The network was deleted (the store refuses epochs for it): this loop stops, the term goes on.
          log('network gone; its key schedule stops', { network: this.networkId });
          return this.term.forget(this);
        }
        this.#problem = isStoreError(err, 'VEIL_ERR_STORE_UNAVAILABLE')
          ? `etcd unreachable: ${(err as Error).message}`
          : (err as Error).message;
        this.#waiting = { until: clock.now() + retryMs, reason: `retrying after: ${this.#problem}` };
        log('key schedule step failed; retrying', { network: this.networkId, ...errorFields(err) });
        this.#arm(retryMs);
        return;
      }
    }
    log('key schedule did not settle; backing off', { network: this.networkId, actions: MAX_ACTIONS_PER_RUN });
    this.#arm(retryMs);
  }

  #arm(ms: number): void {
    if (this.#stopped) return;
    this.#cancelTimer?.();
    this.#cancelTimer = this.term.d.clock.setTimer(Math.max(1, ms), () => this.kick());
  }

  async #read(): Promise<Snapshot | null> {
    const { store, requests, clock, config } = this.term.d;
    // Two round trips: this runs again as acks come in, and the read after the last one is on the rotation's path.
    const [network, epochs, hosts, request, copies] = await Promise.all([
      store.getNetwork(this.networkId),
      store.getEpochs(this.networkId),
      store.listHosts(),
      requests.get(this.networkId),
      store.listCopies(this.networkId),
    ]);
    if (!network.encrypted) {
      this.term.forget(this);
      return null;
    }
    const holders = new Map<number, Set<string>>();
    for (const c of copies.items) {
      if (!holders.has(c.epoch)) holders.set(c.epoch, new Set());
      holders.get(c.epoch)!.add(c.hostId);
    }
    const members = new Map(
      memberHosts(hosts.items)
        .filter((h) => !this.#unusableKeys.has(keyId(h)))
        .map((h) => [h.id, h]),
    );
    const published = epochs.items.filter((r) => r.state === 'published').map((r) => r.epoch);
    const listings = await Promise.all(published.map((epoch) => store.listAcks(this.networkId, epoch)));
    const acks = new Map<number, Set<string>>();
    published.forEach((epoch, i) => {
      // An ack counts for the host's current process only: a restarted host acks again.
      const current = listings[i]!.items.filter((a) => members.get(a.hostId)?.incarnation === a.incarnation);
      acks.set(epoch, new Set(current.map((a) => a.hostId)));
    });
    return {
      input: {
        epochs: epochs.items,
        acks,
        holders,
        members: [...members.keys()],
        now: clock.now(),
        config,
        request,
        unrecoverable: this.#unrecoverable,
      },
      epochs: new Map(epochs.items.map((r) => [r.epoch, r])),
      members,
    };
  }

  async #perform(action: Exclude<Action, { kind: 'wait' }>, snap: Snapshot): Promise<void> {
    const { store, log } = this.term.d;
    const leadership = this.term.leadership;
    const now = snap.input.now;
    const network = this.networkId;
    const record = snap.epochs.get(action.epoch);
    switch (action.kind) {
      case 'publish': {
        const raw = this.term.d.randomBytes(EPOCH_SECRET_LENGTH);
        const secret = new SecretKey(raw);
        raw.fill(0);
        try {
          const wrapped = await this.#wrapFor(secret, action.epoch, [...snap.members.values()]);
          const copies = Object.keys(wrapped).length;
          if (copies === 0) return; // every key unusable: the next read has no members and waits
          await store.putEpoch(
            leadership,
            { networkId: network, epoch: action.epoch, state: 'published', publishedAt: now, copies },
            wrapped,
          );
          log('epoch published', {
            network,
            epoch: action.epoch,
            because: action.because,
            members: Object.keys(wrapped).sort(),
          });
        } finally {
          secret.wipe();
        }
        break;
      }
      case 'rewrap': {
        if (!record) return;
        const { self } = this.term.d;
        const own = unwrapForSelf(await store.getCopy(network, action.epoch, self.hostId), record, self);
        if (!own.ok) {
          this.#unrecoverable.add(action.epoch);
          log('epoch cannot be rewrapped: this leader holds no usable copy', {
            code: KEY_UNAVAILABLE,
            network,
            epoch: action.epoch,
            why: own.why,
            hosts: action.hosts,
          });
          return;
        }
        try {
          const hosts = action.hosts.flatMap((id) => snap.members.get(id) ?? []);
          const added = await this.#wrapFor(own.secret, action.epoch, hosts);
          if (Object.keys(added).length === 0) return;
          // The count changes, so the hosts waiting for a copy see the record change and read theirs.
          const held = snap.input.holders.get(action.epoch)?.size ?? 0;
          const copies = held + Object.keys(added).length;
          await store.putEpoch(leadership, { ...recordOf(record), copies, wrappedAt: now }, added);
          log('epoch rewrapped for joining hosts', { network, epoch: action.epoch, hosts: Object.keys(added).sort() });
        } finally {
          own.secret.wipe();
        }
        break;
      }
      case 'activate': {
        if (!record) return;
        await store.putEpoch(leadership, { ...recordOf(record), state: 'active', activatedAt: now });
        if (action.because === 'ack-timeout') {
          this.#ackTimeouts++;
          log('epoch activated without every ack (ack timeout)', {
            network,
            epoch: action.epoch,
            rotation: action.rotation,
            missing: action.missing,
          });
        } else log('epoch activated', { network, epoch: action.epoch, rotation: action.rotation });
        break;
      }
      case 'retire': {
        if (!record) return;
        // A retired epoch is used by no one: its wrapped copies go (the store deletes them with it).
        await store.putEpoch(leadership, { ...recordOf(record), state: 'retired', retiredAt: now, copies: 0 });
        log('epoch retired', { network, epoch: action.epoch, because: action.because });
        break;
      }
      case 'delete': {
        await store.deleteEpoch(leadership, network, action.epoch);
        this.#unrecoverable.delete(action.epoch);
        log('epoch deleted', { network, epoch: action.epoch });
        break;
      }
    }
    const detail =
      action.kind === 'publish' || action.kind === 'activate' || action.kind === 'retire'
        ? action.because
        : action.kind === 'rewrap'
          ? action.hosts.join(',')
          : undefined;
    this.#lastAction = { kind: action.kind, epoch: action.epoch, at: now, ...(detail !== undefined ? { detail } : {}) };
  }

  /**
   * Wraps for each host; a host whose public key cannot be used is logged and left out from now on.
   * Yields to the event loop every WRAPS_PER_TURN copies: the gateway's API, agent and DNS share it,
   * and a wrap costs about 0.25 ms (1,000 members: 250 ms; 16,383: 4 s).
   */
  async #wrapFor(secret: SecretKey, epoch: number, hosts: HostRecord[]): Promise<Record<string, string>> {
    const wrapped: Record<string, string> = {};
    for (const [i, h] of hosts.entries()) {
      if (i > 0 && i % WRAPS_PER_TURN === 0) await new Promise((resolve) => setImmediate(resolve));
      try {
        wrapped[h.id] = wrapForHost(secret, h, this.networkId, epoch);
      } catch (err) {
        this.#unusableKeys.add(keyId(h));
        this.term.d.log('host public key unusable; host left out of the epoch', {
          network: this.networkId,
          epoch,
          host: h.id,
          ...errorFields(err),
        });
      }
    }
    return wrapped;
  }
}

const keyId = (h: Pick<HostRecord, 'id' | 'publicKey'>): string => `${h.id}:${h.publicKey}`;

/** The record's own fields only: a record as read may carry fields an older release wrote. */
function recordOf(r: KeyEpochRecord): KeyEpochRecord {
  return {
    networkId: r.networkId,
    epoch: r.epoch,
    state: r.state,
    publishedAt: r.publishedAt,
    ...(r.activatedAt !== undefined ? { activatedAt: r.activatedAt } : {}),
    ...(r.retiredAt !== undefined ? { retiredAt: r.retiredAt } : {}),
    ...(r.wrappedAt !== undefined ? { wrappedAt: r.wrappedAt } : {}),
    copies: Number.isSafeInteger(r.copies) ? r.copies : 0,
  };
}
