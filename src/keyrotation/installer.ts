import type { SecretKey } from '../crypto/secret.js';
import { VeilError, type ErrorCode } from '../errors.js';
import { parseKey } from '../store/layout.js';
import type { EpochState, KeyEpochRecord, WatchEvent } from '../store/types.js';
import { nextRotationAt, scheduleConfig, type ScheduleConfig } from './schedule.js';
import { errorFields, noLog, systemClock, type Clock, type LogFn } from './seams.js';
import { unwrapForSelf, type HostIdentity } from './wrapping.js';

/*
 * The member side of the key schedule: what this host's gateway must do for the epoch
 * records etcd holds, in make-before-break order (docs/keys.md "Rotation", schedule.ts):
 *
 *   0. switch OUTBOUND  to the newest active epoch already installed, if it is newer
 *   1. retire           every installed epoch whose record is retired or gone
 *   2. install INBOUND  for every published or active epoch this host holds a copy of (read once)
 *   3. ack              each published epoch once its inbound SAs are installed
 *   4. switch OUTBOUND  to the newest active epoch that is installed (never backwards)
 *
 * Step 0 is step 4 for what needs no room: a host that falls behind (its records jump from
 * {e active, e+1 published} to {e retired, e+1 active}) moves its outbound to e+1 before e goes,
 * so it never seals nothing in between; switching needs no new SA, so it needs no room.
 * Retiring comes first because the data path holds at most three epochs per network and
 * an SPI carries the epoch mod 4: after a watch gap one batch (or a resync) can jump
 * from {e, e+1, e+2} to {e+1 retired, e+2 active, e+3 published}, and e+3 only fits once
 * e and e+1 are out. In the steady schedule nothing changes: the leader retires an epoch
 * only after the next one is active (and installed here) for the grace period.
 *
 * A sink that finds the network gone (VEIL_ERR_NOT_FOUND from installEpoch: the agent
 * read it from etcd) drops the network's records instead of retrying them; a later record
 * for it is tried again.
 *
 * I/O-free: the gateway sits behind EpochSink and the store behind the `ack` and `copy` callbacks;
 * records arrive by sync() (a full listing of one network), applyEvents() (watch events)
 * or applySnapshot() (a watch resync). Idempotent: the same records again change
 * nothing, and a restarted host that replays the current state ends where it was.
 * No method rejects (an event handler must not throw): failures are logged, counted,
 * shown in status() and retried.
 */

/** Logged (never thrown) when an epoch's secret cannot be recovered with this host's key. */
const KEY_UNAVAILABLE: ErrorCode = 'VEIL_ERR_KEY_UNAVAILABLE';

export interface EpochSink {
  /**
   * Derive and install the inbound SAs of (network, epoch). Ownership of `secret` passes
   * to the sink: it keeps it to derive SAs for peers that join later and wipes it on retire.
   */
  installEpoch(networkId: string, epoch: number, secret: SecretKey): Promise<void>;
  /** Seal outbound traffic of the network with this epoch from now on. */
  activateEpoch(networkId: string, epoch: number): Promise<void>;
  /** Drop the epoch's SAs (inbound, and outbound if it still were the outbound epoch: fail closed). */
  retireEpoch(networkId: string, epoch: number): Promise<void>;
}

export interface EpochInstallerOptions {
  self: HostIdentity;
  sink: EpochSink;
  /** Writes the ack for (network, epoch); the agent binds it to the host lease (Store.ack). */
  ack(networkId: string, epoch: number): Promise<void>;
  /** This host's wrapped copy of the record's secret (Store.getCopy): null when it holds none. */
  copy(record: KeyEpochRecord): Promise<string | null>;
  log?: LogFn;
  clock?: Clock;
  /** For nextRotationAt in status(); the leader's config is the one that counts. */
  config?: Partial<ScheduleConfig>;
  /** Backoff before retrying a failed install, ack, switch or retire. */
  retryMs?: number;
}

export type EpochProblem = 'not-member' | 'key-unavailable' | 'install-failed';

export interface EpochStatus {
  epoch: number;
  state: EpochState;
  publishedAt: number;
  activatedAt?: number;
  retiredAt?: number;
  /** This host's inbound SAs for the epoch are installed. */
  installed: boolean;
  acked: boolean;
  /** This host seals with this epoch. */
  outbound: boolean;
  problem: EpochProblem | null;
}

export interface NetworkKeyStatus {
  networkId: string;
  outboundEpoch: number | null;
  epochs: EpochStatus[];
  nextRotationAt: number | null;
  /** Why rotation is not moving here right now (null: nothing pending). */
  waiting: string | null;
}

export interface InstallerStatus {
  hostId: string;
  store: { reachable: boolean; since: number | null; detail: string | null };
  counters: {
    notMember: number;
    unwrapFailures: number;
    installFailures: number;
    ackFailures: number;
    /** Reads of this host's copy that failed (etcd unreachable); retried. */
    copyReadFailures: number;
  };
  networks: NetworkKeyStatus[];
}

interface Installed {
  acked: boolean;
  installedAt: number;
}

interface NetState {
  records: Map<number, KeyEpochRecord>;
  installed: Map<number, Installed>;
  outbound: number | null;
  /**
   * Why an epoch is not installed. `copies` is the record's count when it was found (a rewrap changes
   * it, so the copy is read again), `blob` the copy that failed (the same one is not counted twice).
   */
  problems: Map<number, { why: EpochProblem; copies?: number; blob?: string }>;
}

export const DEFAULT_INSTALLER_RETRY_MS = 2000;

export class EpochInstaller {
  readonly #o: EpochInstallerOptions;
  readonly #log: LogFn;
  readonly #clock: Clock;
  readonly #config: ScheduleConfig;
  readonly #nets = new Map<string, NetState>();
  /** Per network, the revision of the last full listing: older events are already in it. */
  readonly #synced = new Map<string, number>();
  readonly #counters = { notMember: 0, unwrapFailures: 0, installFailures: 0, ackFailures: 0, copyReadFailures: 0 };
  #store = { reachable: true, since: null as number | null, detail: null as string | null };
  #queue: Promise<void> = Promise.resolve();
  #retry: (() => void) | null = null;
  #closed = false;

  constructor(options: EpochInstallerOptions) {
    this.#o = options;
    this.#log = options.log ?? noLog;
    this.#clock = options.clock ?? systemClock;
    this.#config = scheduleConfig(options.config);
  }

  get hostId(): string {
    return this.#o.self.hostId;
  }

  /** The network's complete epoch listing (Store.getEpochs), read at `revision`. */
  sync(networkId: string, records: readonly KeyEpochRecord[], revision = 0): Promise<void> {
    return this.#enqueue(async () => {
      this.#synced.set(networkId, Math.max(revision, this.#synced.get(networkId) ?? 0));
      const net = this.#net(networkId);
      net.records = new Map(
        records.filter((r) => isEpochRecord(r) && r.networkId === networkId).map((r) => [r.epoch, r]),
      );
      await this.#reconcile(networkId);
    });
  }

  /** Watch events from keys/ (others are ignored), in revision order. */
  applyEvents(events: readonly WatchEvent[]): Promise<void> {
    return this.#enqueue(async () => {
      const touched = new Set<string>();
      for (const e of events) {
        const k = parseKey(e.key);
        if (k?.kind !== 'keyEpoch' || e.revision <= (this.#synced.get(k.networkId) ?? 0)) continue;
        const net = this.#net(k.networkId);
        if (e.type === 'delete') net.records.delete(k.epoch);
        else if (isEpochRecord(e.value) && e.value.networkId === k.networkId && e.value.epoch === k.epoch)
          net.records.set(k.epoch, e.value);
        else {
          this.#log('malformed key epoch record ignored', { key: e.key });
          continue;
        }
        touched.add(k.networkId);
      }
      for (const id of touched) await this.#reconcile(id);
    });
  }

  /** A watch resync: `snapshot` is the whole watched prefix as of `revision`; networks missing from it have no epochs. */
  applySnapshot(snapshot: ReadonlyArray<{ key: string; value: unknown }>, revision: number): Promise<void> {
    return this.#enqueue(async () => {
      const byNet = new Map<string, Map<number, KeyEpochRecord>>();
      for (const { key, value } of snapshot) {
        const k = parseKey(key);
        if (k?.kind !== 'keyEpoch' || !isEpochRecord(value)) continue;
        if (!byNet.has(k.networkId)) byNet.set(k.networkId, new Map());
        byNet.get(k.networkId)!.set(k.epoch, value);
      }
      for (const id of new Set([...this.#nets.keys(), ...byNet.keys()])) {
        this.#synced.set(id, revision);
        this.#net(id).records = byNet.get(id) ?? new Map();
        await this.#reconcile(id);
      }
    });
  }

  /** The network is gone (or no longer ours): retire everything installed for it. */
  removeNetwork(networkId: string): Promise<void> {
    return this.#enqueue(async () => {
      const net = this.#nets.get(networkId);
      if (!net) return;
      net.records = new Map();
      await this.#reconcile(networkId);
      if (net.installed.size === 0) this.#synced.delete(networkId);
    });
  }

  /** After the host re-registered (a new lease, so its acks are gone): ack published epochs again. */
  resetAcks(): Promise<void> {
    return this.#enqueue(async () => {
      for (const net of this.#nets.values()) for (const i of net.installed.values()) i.acked = false;
      for (const id of this.#nets.keys()) await this.#reconcile(id);
    });
  }

  /** Reported by whoever reads etcd for us (EpochFollower): shown in status as "rotation waits". */
  setStoreReachable(reachable: boolean, detail?: string): void {
    if (reachable === this.#store.reachable) return;
    this.#store = reachable
      ? { reachable, since: null, detail: null }
      : { reachable, since: this.#clock.now(), detail: detail ?? null };
    this.#log(
      reachable
        ? 'etcd reachable again; key rotation resumes'
        : 'etcd unreachable; current SAs stay, key rotation waits',
      detail ? { detail } : {},
    );
  }

  /** Resolves once every queued change has been applied (tests, orderly shutdown). */
  idle(): Promise<void> {
    return this.#queue;
  }

  close(): void {
    this.#closed = true;
    this.#retry?.();
    this.#retry = null;
  }

  status(): InstallerStatus {
    const networks: NetworkKeyStatus[] = [];
    for (const [networkId, net] of [...this.#nets].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const records = [...net.records.values()].sort((a, b) => a.epoch - b.epoch);
      const epochs = new Set([...net.records.keys(), ...net.installed.keys()]);
      const pending = records.find((r) => r.state === 'published');
      networks.push({
        networkId,
        outboundEpoch: net.outbound,
        epochs: [...epochs]
          .sort((a, b) => a - b)
          .map((epoch) => {
            const r = net.records.get(epoch);
            const inst = net.installed.get(epoch);
            return {
              epoch,
              state: r?.state ?? 'retired',
              publishedAt: r?.publishedAt ?? 0,
              ...(r?.activatedAt !== undefined ? { activatedAt: r.activatedAt } : {}),
              ...(r?.retiredAt !== undefined ? { retiredAt: r.retiredAt } : {}),
              installed: inst !== undefined,
              acked: inst?.acked ?? false,
              outbound: net.outbound === epoch,
              problem: net.problems.get(epoch)?.why ?? null,
            };
          }),
        nextRotationAt: nextRotationAt(records, this.#config),
        waiting: !this.#store.reachable
          ? `etcd unreachable${this.#store.detail ? ` (${this.#store.detail})` : ''}: current SAs stay, rotation waits`
          : pending && !net.installed.get(pending.epoch)?.acked
            ? `epoch ${pending.epoch} published; not yet installed here`
            : null, // an installed standby waits for its rotation: nothing to wait for here
      });
    }
    return { hostId: this.hostId, store: { ...this.#store }, counters: { ...this.#counters }, networks };
  }

  #net(networkId: string): NetState {
    let net = this.#nets.get(networkId);
    if (!net) {
      net = { records: new Map(), installed: new Map(), outbound: null, problems: new Map() };
      this.#nets.set(networkId, net);
    }
    return net;
  }

  #enqueue(step: () => Promise<void>): Promise<void> {
    this.#queue = this.#queue.then(step).catch((err: unknown) => this.#log('key installer failed', errorFields(err)));
    return this.#queue;
  }

  /** Steps 1-4 above for one network. A failed step is logged and retried later; the others go on. */
  async #reconcile(networkId: string): Promise<void> {
    if (this.#closed) return;
    const net = this.#net(networkId);
    const { sink } = this.#o;
    let failed = false;
    const at = (epoch: number) => ({ network: networkId, epoch });

    // 0. Outbound to a newer active epoch that is installed already: before its predecessor goes.
    failed = (await this.#switchOutbound(networkId, net)) || failed;

    // 1. Retire what is retired or gone, first: what comes in next needs its room in the data path.
    failed = (await this.#retireGone(networkId, net)) || failed;

    // 2. Inbound: published and active epochs.
    let networkGone = false;
    for (const r of [...net.records.values()].sort((a, b) => a.epoch - b.epoch)) {
      if ((r.state !== 'published' && r.state !== 'active') || net.installed.has(r.epoch)) continue;
      const known = net.problems.get(r.epoch);
      if (known && known.why !== 'install-failed' && known.copies === r.copies) continue; // no rewrap since
      let copy: string | null;
      try {
        copy = await this.#o.copy(r);
      } catch (err) {
        failed = true;
        this.#counters.copyReadFailures++;
        this.#log("cannot read this host's copy of the epoch secret; will retry", {
          ...at(r.epoch),
          ...errorFields(err),
        });
        continue;
      }
      const mine = unwrapForSelf(copy, r, this.#o.self);
      if (!mine.ok) {
        const blob = copy ?? undefined;
        const seen = known && known.why === mine.why && known.blob === blob;
        net.problems.set(r.epoch, { why: mine.why, copies: r.copies, ...(blob !== undefined ? { blob } : {}) });
        if (seen) continue; // the same copy as before: already counted and logged
        if (mine.why === 'not-member') {
          this.#counters.notMember++;
          this.#log('not a member of this epoch; nothing installed', at(r.epoch));
        } else {
          this.#counters.unwrapFailures++;
          this.#log('epoch secret does not unwrap with this host key; nothing installed', {
            code: KEY_UNAVAILABLE,
            ...at(r.epoch),
          });
        }
        continue;
      }
      try {
        await sink.installEpoch(networkId, r.epoch, mine.secret);
        net.installed.set(r.epoch, { acked: false, installedAt: this.#clock.now() });
        net.problems.delete(r.epoch);
        this.#log('epoch installed (inbound)', { ...at(r.epoch), state: r.state });
      } catch (err) {
        if (isNetworkGone(err)) {
          networkGone = true;
          break;
        }
        failed = true;
        this.#counters.installFailures++;
        net.problems.set(r.epoch, { why: 'install-failed' });
        this.#log('epoch install failed; will retry', { ...at(r.epoch), ...errorFields(err) });
      }
    }
    if (networkGone) {
      // Its records are leftovers (the network was deleted in etcd): nothing to install, ack or retry.
      this.#log('network gone; its epoch records are dropped', {
        network: networkId,
        epochs: [...net.records.keys()].sort((a, b) => a - b),
      });
      net.records = new Map();
      failed = (await this.#retireGone(networkId, net)) || failed;
    }
    const records = [...net.records.values()].sort((a, b) => a.epoch - b.epoch);

    // 3. Ack what is installed and still published (the leader waits for these acks only).
    for (const r of records) {
      const inst = net.installed.get(r.epoch);
      if (r.state !== 'published' || !inst || inst.acked) continue;
      try {
        await this.#o.ack(networkId, r.epoch);
        inst.acked = true;
        this.#log('epoch acked', at(r.epoch));
      } catch (err) {
        failed = true;
        this.#counters.ackFailures++;
        this.#log('epoch ack failed; will retry', { ...at(r.epoch), ...errorFields(err) });
      }
    }

    // 4. Outbound to the newest active epoch this host has installed; never backwards.
    failed = (await this.#switchOutbound(networkId, net)) || failed;

    for (const epoch of net.problems.keys()) if (!net.records.has(epoch)) net.problems.delete(epoch);
    // A network with nothing left (its keys were deleted with it) leaves the status; #synced stays.
    if (net.records.size === 0 && net.installed.size === 0) this.#nets.delete(networkId);
    if (failed) this.#scheduleRetry();
  }

  /** Outbound to the newest active epoch this host has installed, if newer; true if it failed (retried later). */
  async #switchOutbound(networkId: string, net: NetState): Promise<boolean> {
    const target = [...net.records.values()]
      .filter((r) => r.state === 'active' && net.installed.has(r.epoch))
      .sort((a, b) => a.epoch - b.epoch)
      .pop()?.epoch;
    if (target === undefined || (net.outbound !== null && target <= net.outbound)) return false;
    try {
      await this.#o.sink.activateEpoch(networkId, target);
      this.#log('outbound switched to epoch', { network: networkId, epoch: target, previous: net.outbound });
      net.outbound = target;
      return false;
    } catch (err) {
      this.#log('outbound switch failed; will retry', { network: networkId, epoch: target, ...errorFields(err) });
      return true;
    }
  }

  /** Retires every installed epoch whose record is retired or gone; true if one failed (retried later). */
  async #retireGone(networkId: string, net: NetState): Promise<boolean> {
    let failed = false;
    for (const epoch of [...net.installed.keys()].sort((a, b) => a - b)) {
      const r = net.records.get(epoch);
      if (r && r.state !== 'retired') continue;
      try {
        await this.#o.sink.retireEpoch(networkId, epoch);
        net.installed.delete(epoch);
        if (net.outbound === epoch) net.outbound = null; // fail closed until a newer epoch is active here
        this.#log('epoch retired', { network: networkId, epoch, because: r ? 'retired' : 'deleted' });
      } catch (err) {
        failed = true;
        this.#log('epoch retire failed; will retry', { network: networkId, epoch, ...errorFields(err) });
      }
    }
    return failed;
  }

  #scheduleRetry(): void {
    if (this.#retry || this.#closed) return;
    this.#retry = this.#clock.setTimer(this.#o.retryMs ?? DEFAULT_INSTALLER_RETRY_MS, () => {
      this.#retry = null;
      void this.#enqueue(async () => {
        for (const id of this.#nets.keys()) await this.#reconcile(id);
      });
    });
  }
}

/** The sink could not find the network (the agent reads it from etcd): it was deleted. */
function isNetworkGone(err: unknown): boolean {
  return err instanceof VeilError && err.code === 'VEIL_ERR_NOT_FOUND';
}

/** Just enough shape to act on; the store validated the record when it was written. */
function isEpochRecord(v: unknown): v is KeyEpochRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Partial<KeyEpochRecord>;
  return (
    typeof r.networkId === 'string' &&
    Number.isSafeInteger(r.epoch) &&
    (r.state === 'published' || r.state === 'active' || r.state === 'retired') &&
    typeof r.publishedAt === 'number'
  );
}
