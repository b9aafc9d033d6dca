import { VeilError } from '../errors.js';
import type { HostRecord, KeyEpochRecord } from '../store/types.js';
import { isWindows } from '../model/windows.js';

/*
 * The key schedule of one encrypted network as a pure function (docs/keys.md "Rotation"):
 * (epochs, copies, acks, members, time, config, rotation request) → the one next action.
 * The leader performs the action with a fenced write, re-reads, and asks again until
 * the answer is `wait`; it then sleeps until `until` or until etcd changes.
 *
 * Make-before-break (docs/keys.md "Rotation"). Every epoch moves
 * published → active → retired → deleted, and the gateways follow:
 *
 *   step  leader writes                     every member gateway does
 *   1     e+1 published (wrapped secrets)   install INBOUND SAs of e+1, then ack (under its lease)
 *   2     e+1 active (rotation due, acked)  switch OUTBOUND to e+1; inbound e stays for packets in flight
 *   3     e retired (grace after step 2)    drop the inbound SAs of e
 *   4     e deleted (linger after step 3)   nothing left to do (a deleted epoch is retired if still held)
 *
 * Step 1 comes as soon as there is room, not when the rotation is due: the next epoch waits
 * published and acked (the standby) while the current one seals, so a due rotation is one write,
 * step 2.
 *
 * The decision table, first matching row wins (test/keyrotation/schedule.test.ts has a
 * row for each):
 *
 *   state of the network's epochs                          time / acks / members              → action
 *   a published or active epoch lacks a live member        leader can unwrap its own copy      → rewrap {epoch, hosts}
 *   published epoch older than an active one (stale)       —                                  → retire (never activate out of order)
 *   published e, rotation not due (the standby)            —                                  → (no action on e; acks counted)
 *   published e, rotation due, a host that left holds a    a replacement fits (≤ 3 numbers)   → retire (member-left)
 *     copy, or it lacks a member and cannot be rewrapped   else, an older epoch than current  → (wait for it to go)
 *   published e, rotation due                              every member holding e acked       → activate e (all-acked)
 *   published e, rotation due                              now ≥ max(publish, last wrap, due)  → activate e (ack-timeout, missing)
 *                                                          + ackTimeout
 *   active e, newer active f                               now ≥ activatedAt(f) + grace       → retire e
 *   retired e, not the newest record                       now ≥ retiredAt + linger           → delete e
 *   no published/active epoch                              ≥ 1 member                         → publish max+1 (first)
 *   current (newest active) c                              now ≥ activatedAt(c) + interval    → publish c+1 (interval)
 *   current c                                              request.afterEpoch ≥ c             → publish c+1 (requested)
 *   current c lacks a member and cannot be rewrapped       —                                  → publish c+1 (unrecoverable)
 *   publish due, but a published epoch is pending          —                                  → wait (acks)
 *   publish due, but max+1 − oldest ≥ 3                    —                                  → wait (retire/delete first)
 *   current c, no published epoch, room for one            ≥ 1 member                         → publish max+1 (standby)
 *   anything else                                          —                                  → wait until the earliest deadline
 *
 * Why epoch numbers span at most three (previous, current, next; newest − oldest record ≤ 2),
 * retired records included: the SPI carries epoch mod 4 (docs/wire.md "SPI layout"), new = newest
 * + 1, and only the oldest record may hold the span open, so even a slow gateway that still holds
 * the epoch just below the oldest never holds two epochs that share epoch mod 4. A standby replaced
 * because a host left retires out of order, which leaves a gap, never a wider span.
 */

export interface ScheduleConfig {
  /** Rotation period, measured from the current epoch's activation. Default 12 h (docs/keys.md "Rotation"). */
  intervalMs: number;
  /** How long a published epoch waits for acks from live members before it is activated anyway. */
  ackTimeoutMs: number;
  /** How long the previous epoch stays installed (inbound) after the next one is activated. */
  graceMs: number;
  /** How long a retired epoch's record stays in etcd (status, slow gateways) before deletion. */
  retiredLingerMs: number;
}

export const DEFAULT_SCHEDULE_CONFIG: Readonly<ScheduleConfig> = Object.freeze({
  intervalMs: 12 * 60 * 60 * 1000,
  // A dead host drops out of `members` when its lease expires (15 s by default); the
  // timeout only covers a live host that cannot install.
  ackTimeoutMs: 60_000,
  graceMs: 60_000,
  retiredLingerMs: 60_000,
});

/** Epoch records of a network span at most this many epoch numbers (see the comment above). */
export const MAX_LIVE_EPOCHS = 3;

/** Fills defaults and validates; throws VEIL_ERR_CONFIG_INVALID (configuration time only). */
export function scheduleConfig(partial: Partial<ScheduleConfig> = {}): ScheduleConfig {
  const c: ScheduleConfig = { ...DEFAULT_SCHEDULE_CONFIG, ...partial };
  const positive = (k: keyof ScheduleConfig, min: number): void => {
    if (!Number.isFinite(c[k]) || c[k] < min)
      throw new VeilError('VEIL_ERR_CONFIG_INVALID', `key schedule ${k} must be a number ≥ ${min} (ms)`);
  };
  positive('intervalMs', 1);
  positive('ackTimeoutMs', 1);
  positive('graceMs', 0);
  positive('retiredLingerMs', 0);
  return c;
}

/** A forced rotation: "give this network an epoch newer than `afterEpoch`" (requests.ts). */
export interface RotationWanted {
  afterEpoch: number;
  /** When it was asked (the requester's clock): a missing ack's timeout counts from here at the latest. */
  requestedAt?: number;
}

export interface ScheduleInput {
  /** The network's epoch records, any order. */
  epochs: readonly KeyEpochRecord[];
  /** epoch → host ids that acked it (only published epochs are consulted). */
  acks: ReadonlyMap<number, ReadonlySet<string>>;
  /** epoch → host ids etcd holds a wrapped copy for (Store.listCopies). */
  holders: ReadonlyMap<number, ReadonlySet<string>>;
  /** Live registered hosts that can encrypt (not Windows): the epoch's members. */
  members: readonly string[];
  now: number;
  config: ScheduleConfig;
  /** The network's pending rotation request, if any. */
  request?: RotationWanted | null;
  /** Epochs whose secret the leader cannot recover (no copy wrapped for it): they cannot be rewrapped. */
  unrecoverable?: ReadonlySet<number>;
}

/** Why a rotation is due. */
export type RotationReason = 'first' | 'interval' | 'requested' | 'unrecoverable';
/** Why an epoch is published: a rotation is due, or to wait ready for the next one (standby). */
export type PublishReason = RotationReason | 'standby';

export type Action =
  | { kind: 'publish'; epoch: number; because: PublishReason }
  | { kind: 'rewrap'; epoch: number; hosts: string[] }
  | {
      kind: 'activate';
      epoch: number;
      because: 'all-acked' | 'ack-timeout';
      missing: string[];
      /** Why the rotation is due. */
      rotation: RotationReason;
    }
  | { kind: 'retire'; epoch: number; because: 'grace-over' | 'stale' | 'member-left' | 'unrecoverable' }
  | { kind: 'delete'; epoch: number }
  /**
   * Nothing to do. `until`: when to look again (null: only when etcd changes). `acks`: the published
   * epoch whose acks are still coming, and the members still missing (an ack from one of them changes
   * the answer only when it is the last, and for a standby not even then).
   */
  | { kind: 'wait'; until: number | null; reason: string; acks?: AwaitedAcks };

export interface AwaitedAcks {
  epoch: number;
  missing: string[];
}

const byEpoch = (a: KeyEpochRecord, b: KeyEpochRecord): number => a.epoch - b.epoch;
const isLive = (r: KeyEpochRecord): boolean => r.state === 'published' || r.state === 'active';
const activatedAt = (r: KeyEpochRecord): number => r.activatedAt ?? r.publishedAt;

/** The newest active epoch: the one gateways seal with. */
export function currentEpoch(epochs: readonly KeyEpochRecord[]): KeyEpochRecord | undefined {
  return [...epochs]
    .sort(byEpoch)
    .filter((r) => r.state === 'active')
    .pop();
}

/**
 * When the timer makes the next rotation due (for the status API): the current epoch's
 * activation + interval. null while there is no current epoch (the first one is being published).
 */
export function nextRotationAt(epochs: readonly KeyEpochRecord[], config: ScheduleConfig): number | null {
  const current = currentEpoch(epochs);
  return current ? activatedAt(current) + config.intervalMs : null;
}

interface Deadline {
  at: number;
  reason: string;
}

export function nextAction(input: ScheduleInput): Action {
  const { now, config } = input;
  const epochs = [...input.epochs].sort(byEpoch);
  const memberSet = new Set(input.members);
  const members = [...memberSet].sort();
  const unrecoverable = input.unrecoverable ?? new Set<number>();
  const holds = (r: KeyEpochRecord, hostId: string): boolean => input.holders.get(r.epoch)?.has(hostId) ?? false;
  const current = currentEpoch(epochs);
  const newest = epochs[epochs.length - 1];
  const next = (newest?.epoch ?? 0) + 1;
  // Room for one more number: the records would still span at most MAX_LIVE_EPOCHS (comment above).
  const room = epochs.length === 0 || next - epochs[0]!.epoch < MAX_LIVE_EPOCHS;
  const deadlines: Deadline[] = [];
  let awaited: AwaitedAcks | undefined;
  /** Why a due rotation cannot activate its published epoch yet (it must be replaced first). */
  let held: string | undefined;

  // Rewrap: a member without its wrapped copy of a live epoch cannot install it (docs/keys.md "Key wrap").
  for (const r of epochs) {
    if (!isLive(r) || unrecoverable.has(r.epoch)) continue;
    const lacking = members.filter((m) => !holds(r, m));
    if (lacking.length > 0) return { kind: 'rewrap', epoch: r.epoch, hosts: lacking };
  }

  const due = rotationDue(input, members, current, unrecoverable, holds);

  // Published epochs, oldest first. One older than an active epoch can never be activated
  // (outbound only moves forward): retire it.
  for (const r of epochs) {
    if (r.state !== 'published') continue;
    if (current && r.epoch < current.epoch) return { kind: 'retire', epoch: r.epoch, because: 'stale' };
    const acked = input.acks.get(r.epoch) ?? new Set<string>();
    // A member with no copy (unrecoverable epoch) cannot ack; the rotation rule below reaches it.
    const missing = members.filter((m) => holds(r, m) && !acked.has(m));
    if (missing.length > 0) awaited = { epoch: r.epoch, missing };
    if (!due.because) break; // the standby: installed everywhere, activated when a rotation is due
    // Never activate the standby for a host that left since it was published (a restart that is back
    // by now does not count), nor without a member this leader cannot wrap it for: replace it. With
    // no room, wait for the previous epoch to go; if the current one is the oldest, this epoch was
    // published for this rotation and the host left during it: activate, as without a standby.
    const left = [...(input.holders.get(r.epoch) ?? [])].some((h) => !memberSet.has(h));
    const lacking = unrecoverable.has(r.epoch) && members.some((m) => !holds(r, m));
    if (left || lacking) {
      const because = left ? 'member-left' : 'unrecoverable';
      if (room) return { kind: 'retire', epoch: r.epoch, because };
      if (epochs[0] !== current) {
        held = `rotation due (${due.because}): epoch ${r.epoch} is replaced (${because}) once the older epochs are gone`;
        awaited = undefined;
        break;
      }
    }
    const rotation = due.because;
    if (missing.length === 0) return { kind: 'activate', epoch: r.epoch, because: 'all-acked', missing, rotation };
    // Each missing member gets the full timeout from the latest of: the publish, its copy's wrap (a
    // host that joined), and the moment the rotation came due (a standby waits long before that).
    const timeout = Math.max(r.publishedAt, r.wrappedAt ?? 0, due.at ?? 0) + config.ackTimeoutMs;
    if (now >= timeout) return { kind: 'activate', epoch: r.epoch, because: 'ack-timeout', missing, rotation };
    deadlines.push({ at: timeout, reason: `epoch ${r.epoch} waits for acks from ${missing.join(', ')}` });
    break; // activation is in order: later published epochs wait for this one
  }

  // Retire an active epoch once a newer active epoch has been active for the grace period.
  const actives = epochs.filter((r) => r.state === 'active');
  for (let i = 0; i < actives.length - 1; i++) {
    const old = actives[i]!;
    const graceEnd = activatedAt(actives[i + 1]!) + config.graceMs;
    if (now >= graceEnd) return { kind: 'retire', epoch: old.epoch, because: 'grace-over' };
    deadlines.push({ at: graceEnd, reason: `epoch ${old.epoch} stays installed for the grace period` });
  }

  for (const r of epochs) {
    // The newest record is never deleted, so epoch numbers continue and are never reused.
    if (r.state !== 'retired' || r === newest) continue;
    const lingerEnd = (r.retiredAt ?? now) + config.retiredLingerMs;
    if (now >= lingerEnd) return { kind: 'delete', epoch: r.epoch };
    deadlines.push({ at: lingerEnd, reason: `retired epoch ${r.epoch} lingers` });
  }

  // Publish: because a rotation is due, or ahead of it (the standby).
  const pending = epochs.find((r) => r.state === 'published');
  if (due.because) {
    if (members.length === 0)
      return wait(deadlines, now, `rotation due (${due.because}) but no live member host can encrypt`, awaited);
    if (pending)
      return wait(
        deadlines,
        now,
        held ?? `rotation due (${due.because}) after epoch ${pending.epoch} is activated`,
        awaited,
      );
    if (!room)
      return wait(
        deadlines,
        now,
        `rotation due (${due.because}) once the epochs span fewer than ${MAX_LIVE_EPOCHS} numbers`,
        awaited,
      );
    return { kind: 'publish', epoch: next, because: due.because };
  }
  if (current && !pending && room && members.length > 0) return { kind: 'publish', epoch: next, because: 'standby' };
  if (due.at !== null) deadlines.push({ at: due.at, reason: `epoch ${current?.epoch} rotates on the timer` });
  return wait(deadlines, now, 'nothing to do', awaited);
}

function rotationDue(
  input: ScheduleInput,
  members: readonly string[],
  current: KeyEpochRecord | undefined,
  unrecoverable: ReadonlySet<number>,
  holds: (r: KeyEpochRecord, hostId: string) => boolean,
): { because: RotationReason | null; at: number | null } {
  // No epoch seals yet: the first is due (published, or being published).
  if (!current) return { because: 'first', at: null };
  // "An epoch newer than the one I saw sealing" (requests.ts): the standby answers it. `at`: since when.
  if (input.request && input.request.afterEpoch >= current.epoch)
    return { because: 'requested', at: input.request.requestedAt ?? null };
  if (unrecoverable.has(current.epoch) && members.some((m) => !holds(current, m)))
    return { because: 'unrecoverable', at: null };
  const at = activatedAt(current) + input.config.intervalMs;
  if (input.now >= at) return { because: 'interval', at };
  return { because: null, at };
}

function wait(deadlines: Deadline[], now: number, blocked: string, acks: AwaitedAcks | undefined): Action {
  const future = deadlines.filter((d) => d.at > now).sort((a, b) => a.at - b.at);
  const reasons = future.map((d) => d.reason);
  if (blocked !== 'nothing to do' || reasons.length === 0) reasons.unshift(blocked);
  return { kind: 'wait', until: future[0]?.at ?? null, reason: reasons.join('; '), ...(acks ? { acks } : {}) };
}

/**
 * The members of every encrypted network's epochs: live registered hosts that can
 * encrypt. Windows hosts cannot (windows.ts), so they get no wrapped secret.
 */
export function memberHosts<H extends Pick<HostRecord, 'id' | 'os'>>(hosts: readonly H[]): H[] {
  return hosts.filter((h) => !isWindows(h));
}
