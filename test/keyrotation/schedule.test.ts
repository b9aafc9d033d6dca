import { describe, expect, it } from 'vitest';
import {
  DEFAULT_SCHEDULE_CONFIG,
  MAX_LIVE_EPOCHS,
  memberHosts,
  nextAction,
  nextRotationAt,
  scheduleConfig,
  type Action,
  type ScheduleInput,
} from '../../src/keyrotation/schedule.js';
import type { KeyEpochRecord } from '../../src/store/types.js';

/*
 * The make-before-break table of schedule.ts, one row each (docs/keys.md "Rotation"): the state
 * of a network's epochs, acks, members and time → the leader's next action.
 */

const S = 1000;
const H = 3600 * S;
const config = scheduleConfig({ intervalMs: 12 * H, ackTimeoutMs: 60 * S, graceMs: 30 * S, retiredLingerMs: 10 * S });
const ALL = ['h1', 'h2', 'h3'];
const T = 1_700_000_000_000; // an arbitrary wall-clock start

/** Which hosts etcd holds a wrapped copy for, per record made below (Store.listCopies). */
const copyHolders = new WeakMap<KeyEpochRecord, string[]>();
const withCopies = (r: KeyEpochRecord, hosts: string[]): KeyEpochRecord => {
  copyHolders.set(r, hosts);
  return r;
};
const holdersOf = (epochs: KeyEpochRecord[]) =>
  new Map(epochs.map((r) => [r.epoch, new Set(copyHolders.get(r) ?? [])]));
const published = (epoch: number, at: number, hosts = ALL): KeyEpochRecord =>
  withCopies({ networkId: 'n', epoch, state: 'published', publishedAt: at, copies: hosts.length }, hosts);
/** The next epoch, published an hour after `at` and waiting (the standby). */
const standby = (epoch: number, at: number, hosts = ALL): KeyEpochRecord => published(epoch, at + H, hosts);
const active = (epoch: number, at: number, hosts = ALL): KeyEpochRecord =>
  withCopies(
    { networkId: 'n', epoch, state: 'active', publishedAt: at - 5 * S, activatedAt: at, copies: hosts.length },
    hosts,
  );
const retired = (epoch: number, at: number): KeyEpochRecord => ({
  networkId: 'n',
  epoch,
  state: 'retired',
  publishedAt: at - H,
  activatedAt: at - H / 2,
  retiredAt: at,
  copies: 0,
});
const acked = (epoch: number, hosts: string[]) => new Map([[epoch, new Set(hosts)]]);

interface Row {
  row: string;
  epochs: KeyEpochRecord[];
  acks?: Map<number, Set<string>>;
  members?: string[];
  now: number;
  request?: { afterEpoch: number; requestedAt?: number };
  unrecoverable?: number[];
  expect: Partial<Action> & { kind: Action['kind'] };
  reason?: RegExp;
}

const rows: Row[] = [
  // The first epoch.
  { row: 'no epoch, members → publish 1', epochs: [], now: T, expect: { kind: 'publish', epoch: 1, because: 'first' } },
  {
    row: 'no epoch, no member host → wait for one',
    epochs: [],
    members: [],
    now: T,
    expect: { kind: 'wait', until: null },
    reason: /no live member/,
  },
  {
    row: 'only Windows hosts (no members) → wait',
    epochs: [],
    members: [],
    now: T,
    expect: { kind: 'wait' },
    reason: /no live member host can encrypt/,
  },
  // Step 1 → 2: published, waiting for acks (make before break: nobody seals with it yet).
  {
    row: 'published, acks missing → wait until the ack timeout',
    epochs: [published(1, T)],
    acks: acked(1, ['h1', 'h2']),
    now: T + S,
    expect: { kind: 'wait', until: T + 60 * S, acks: { epoch: 1, missing: ['h3'] } },
    reason: /epoch 1 waits for acks from h3/,
  },
  {
    row: 'published, every member acked → activate',
    epochs: [published(1, T)],
    acks: acked(1, ALL),
    now: T + S,
    expect: { kind: 'activate', epoch: 1, because: 'all-acked', missing: [] },
  },
  {
    row: 'published, ack timeout passed → activate, naming who is missing',
    epochs: [published(1, T)],
    acks: acked(1, ['h1']),
    now: T + 60 * S,
    expect: { kind: 'activate', epoch: 1, because: 'ack-timeout', missing: ['h2', 'h3'] },
  },
  {
    row: 'an ack from a host that holds no copy does not count, and its absence does not block',
    epochs: [active(1, T), published(2, T + H, ['h1', 'h2'])],
    acks: acked(2, ['h1', 'h2', 'h3']),
    members: ['h1', 'h2'],
    request: { afterEpoch: 1 },
    now: T + H + S,
    expect: { kind: 'activate', epoch: 2, because: 'all-acked' },
  },
  // Step 2 → 3: the previous epoch stays installed for the grace period.
  {
    row: 'two active, grace not over → wait until it is',
    epochs: [active(1, T), active(2, T + H), standby(3, T + H)],
    acks: acked(3, ALL),
    now: T + H + S,
    expect: { kind: 'wait', until: T + H + 30 * S },
    reason: /epoch 1 stays installed/,
  },
  {
    row: 'two active, grace over → retire the older',
    epochs: [active(1, T), active(2, T + H)],
    now: T + H + 30 * S,
    expect: { kind: 'retire', epoch: 1, because: 'grace-over' },
  },
  {
    row: 'three active → the oldest retires first',
    epochs: [active(1, T), active(2, T + H), active(3, T + 2 * H)],
    now: T + 3 * H,
    expect: { kind: 'retire', epoch: 1 },
  },
  // Step 3 → 4: a retired epoch lingers, then goes.
  {
    row: 'retired, linger not over → wait',
    epochs: [retired(1, T + H), active(2, T), standby(3, T)],
    acks: acked(3, ALL),
    now: T + H + S,
    expect: { kind: 'wait', until: T + H + 10 * S },
    reason: /retired epoch 1 lingers/,
  },
  {
    row: 'retired, linger over → delete',
    epochs: [retired(1, T + H), active(2, T)],
    now: T + H + 10 * S,
    expect: { kind: 'delete', epoch: 1 },
  },
  // The standby: the next epoch published and installed ahead of the rotation.
  {
    row: 'current active, no standby → publish one',
    epochs: [active(1, T)],
    now: T + S,
    expect: { kind: 'publish', epoch: 2, because: 'standby' },
  },
  {
    row: 'standby installing, rotation not due → wait for the timer, counting its acks',
    epochs: [active(1, T), standby(2, T)],
    acks: acked(2, ['h1']),
    now: T + 2 * H,
    expect: { kind: 'wait', until: T + 12 * H, acks: { epoch: 2, missing: ['h2', 'h3'] } },
    reason: /rotates on the timer/,
  },
  {
    row: 'standby installed, long past its ack timeout, rotation not due → still waits',
    epochs: [active(1, T), standby(2, T)],
    acks: acked(2, ALL),
    now: T + 11 * H,
    expect: { kind: 'wait', until: T + 12 * H },
  },
  {
    row: 'standby installed, interval reached → activate it',
    epochs: [active(1, T), standby(2, T)],
    acks: acked(2, ALL),
    now: T + 12 * H,
    expect: { kind: 'activate', epoch: 2, because: 'all-acked', rotation: 'interval' },
  },
  {
    row: 'standby installed, rotation requested after the current epoch → activate it',
    epochs: [active(1, T), standby(2, T)],
    acks: acked(2, ALL),
    request: { afterEpoch: 1 },
    now: T + 2 * H,
    expect: { kind: 'activate', epoch: 2, because: 'all-acked', rotation: 'requested' },
  },
  {
    row: 'a host that left holds a copy of the standby, no rotation due → nothing yet (a restart comes back)',
    epochs: [active(1, T), standby(2, T)],
    acks: acked(2, ['h1', 'h2']),
    members: ['h1', 'h2'],
    now: T + 2 * H,
    expect: { kind: 'wait', until: T + 12 * H },
  },
  {
    row: 'rotation due, a host that left holds a copy of the standby → retire it, so the host never gets it',
    epochs: [active(1, T), standby(2, T)],
    acks: acked(2, ALL),
    members: ['h1', 'h2'],
    request: { afterEpoch: 1 },
    now: T + 2 * H,
    expect: { kind: 'retire', epoch: 2, because: 'member-left' },
  },
  {
    row: 'then the replacement is published at once (a gap in the numbers, the span stays 3)',
    epochs: [active(1, T), retired(2, T + 2 * H)],
    members: ['h1', 'h2'],
    request: { afterEpoch: 1 },
    now: T + 2 * H + S,
    expect: { kind: 'publish', epoch: 3, because: 'requested' },
  },
  {
    row: 'rotation due, a host that left holds a copy, the previous epoch still in grace → wait for room',
    epochs: [active(1, T), active(2, T + H), standby(3, T)],
    acks: acked(3, ALL),
    members: ['h1', 'h2'],
    request: { afterEpoch: 2 },
    now: T + H + S,
    expect: { kind: 'wait', until: T + H + 30 * S },
    reason: /epoch 3 is replaced \(member-left\) once the older epochs are gone/,
  },
  {
    row: 'a host left during the rotation itself (its replacement holds a copy, no room) → activate, as without a standby',
    epochs: [active(1, T), retired(2, T + 2 * H), published(3, T + 2 * H)],
    acks: acked(3, ['h1', 'h2']),
    members: ['h1', 'h2'],
    request: { afterEpoch: 1 },
    now: T + 2 * H + S,
    expect: { kind: 'activate', epoch: 3, because: 'all-acked', rotation: 'requested' },
  },
  {
    row: 'rotation due, a member has not acked the standby (restarted) → its timeout counts from the request',
    epochs: [active(1, T), standby(2, T)],
    acks: acked(2, ['h1', 'h2']),
    request: { afterEpoch: 1, requestedAt: T + 5 * H },
    now: T + 5 * H + S,
    expect: { kind: 'wait', until: T + 5 * H + 60 * S, acks: { epoch: 2, missing: ['h3'] } },
  },
  {
    row: 'interval reached, a member has not acked the standby → its timeout counts from the interval',
    epochs: [active(1, T), standby(2, T)],
    acks: acked(2, ['h1', 'h2']),
    now: T + 12 * H + S,
    expect: { kind: 'wait', until: T + 12 * H + 60 * S, acks: { epoch: 2, missing: ['h3'] } },
  },
  {
    row: 'a copy wrapped later (a host joined) gets its own ack timeout',
    epochs: [active(1, T, [...ALL, 'h4']), withCopies({ ...standby(2, T), wrappedAt: T + 2 * H }, [...ALL, 'h4'])],
    acks: acked(2, ALL),
    members: [...ALL, 'h4'],
    request: { afterEpoch: 1 },
    now: T + 2 * H + S,
    expect: { kind: 'wait', until: T + 2 * H + 60 * S, acks: { epoch: 2, missing: ['h4'] } },
  },
  // The timer and forced rotation without a standby.
  {
    row: 'current active, before the interval, standby installed → wait until activatedAt + interval',
    epochs: [active(1, T), standby(2, T)],
    acks: acked(2, ALL),
    now: T + 12 * H - 1,
    expect: { kind: 'wait', until: T + 12 * H },
    reason: /rotates on the timer/,
  },
  {
    row: 'current active, interval reached, no standby → publish next',
    epochs: [active(1, T)],
    now: T + 12 * H,
    expect: { kind: 'publish', epoch: 2, because: 'interval' },
  },
  {
    row: 'rotation request after the current epoch, no standby → publish next',
    epochs: [active(1, T)],
    request: { afterEpoch: 1 },
    now: T + S,
    expect: { kind: 'publish', epoch: 2, because: 'requested' },
  },
  {
    row: 'rotation request already satisfied by a newer epoch → no publish',
    epochs: [active(1, T), active(2, T + H)],
    request: { afterEpoch: 1 },
    now: T + H + 40 * S,
    expect: { kind: 'retire', epoch: 1 },
  },
  {
    row: 'satisfied request, nothing else → wait',
    epochs: [active(2, T), standby(3, T)],
    acks: acked(3, ALL),
    request: { afterEpoch: 1 },
    now: T + S,
    expect: { kind: 'wait', until: T + 12 * H },
  },
  {
    row: 'request while the next epoch is published → activate that first',
    epochs: [active(1, T), published(2, T + S)],
    acks: acked(2, ALL),
    request: { afterEpoch: 2 },
    now: T + 2 * S,
    expect: { kind: 'activate', epoch: 2 },
  },
  {
    row: 'request while the next epoch waits for acks → wait, rotation queued',
    epochs: [active(1, T), published(2, T + S)],
    acks: acked(2, ['h1']),
    request: { afterEpoch: 2 },
    now: T + 2 * S,
    expect: { kind: 'wait', until: T + S + 60 * S, acks: { epoch: 2, missing: ['h2', 'h3'] } },
    reason: /rotation due \(requested\) after epoch 2 is activated/,
  },
  {
    row: 'request with the previous still in grace → publish (previous, current, next)',
    epochs: [active(1, T), active(2, T + H)],
    request: { afterEpoch: 2 },
    now: T + H + S,
    expect: { kind: 'publish', epoch: 3, because: 'requested' },
  },
  {
    row: 'rotation due but the epochs span three numbers → wait for retire/delete',
    epochs: [retired(1, T + H), active(2, T), active(3, T + H)],
    request: { afterEpoch: 3 },
    now: T + H + S,
    expect: { kind: 'wait', until: T + H + 10 * S },
    reason: /span fewer than 3 numbers/,
  },
  {
    row: 'no room for a standby (three numbers spanned, with a gap) → wait',
    epochs: [active(1, T), retired(2, T + H), retired(3, T + H)],
    now: T + H + S,
    expect: { kind: 'wait', until: T + H + 10 * S },
    reason: /retired epoch 2 lingers/,
  },
  // Membership.
  {
    row: 'a host joined → rewrap the live epochs for it',
    epochs: [active(1, T)],
    members: [...ALL, 'h4'],
    now: T + S,
    expect: { kind: 'rewrap', epoch: 1, hosts: ['h4'] },
  },
  {
    row: 'rewrap comes before activation (the joiner must be able to ack)',
    epochs: [active(1, T), published(2, T + S)],
    acks: acked(2, ALL),
    members: [...ALL, 'h4'],
    now: T + 2 * S,
    expect: { kind: 'rewrap', epoch: 1, hosts: ['h4'] },
  },
  {
    row: 'retired epochs are not rewrapped',
    epochs: [retired(1, T + H), active(2, T, [...ALL, 'h4'])],
    members: [...ALL, 'h4'],
    now: T + H + S,
    expect: { kind: 'publish', epoch: 3, because: 'standby' },
  },
  {
    row: 'a host left → nothing to do for the active epochs (the next rotation leaves it out)',
    epochs: [active(1, T), standby(2, T, ['h1', 'h2'])],
    acks: acked(2, ['h1', 'h2']),
    members: ['h1', 'h2'],
    now: T + S,
    expect: { kind: 'wait', until: T + 12 * H },
  },
  {
    row: 'joiner, current epoch unrecoverable by this leader → rotate instead',
    epochs: [active(1, T)],
    members: [...ALL, 'h4'],
    unrecoverable: [1],
    now: T + S,
    expect: { kind: 'publish', epoch: 2, because: 'unrecoverable' },
  },
  {
    row: 'joiner lacks an unrecoverable published epoch, rotation due → replace it',
    epochs: [active(1, T, [...ALL, 'h4']), published(2, T + S)],
    acks: acked(2, ALL),
    members: [...ALL, 'h4'],
    unrecoverable: [2],
    request: { afterEpoch: 1 },
    now: T + 2 * S,
    expect: { kind: 'retire', epoch: 2, because: 'unrecoverable' },
  },
  {
    row: 'joiner lacks an unrecoverable published epoch it was published for (no room) → it is not awaited',
    epochs: [active(2, T + S, [...ALL, 'h4']), retired(3, T + S), published(4, T + S)],
    acks: acked(4, ALL),
    members: [...ALL, 'h4'],
    unrecoverable: [4],
    request: { afterEpoch: 2 },
    now: T + 2 * S,
    expect: { kind: 'activate', epoch: 4, because: 'all-acked' },
  },
  // Inconsistent states a new leader could inherit.
  {
    row: 'published epoch older than an active one → retire it (outbound never moves back)',
    epochs: [published(1, T), active(2, T + S)],
    acks: acked(1, ALL),
    now: T + 2 * S,
    expect: { kind: 'retire', epoch: 1, because: 'stale' },
  },
  {
    row: 'only a retired epoch left → publish the next number; the newest record is kept so numbers never restart',
    epochs: [retired(4, T)],
    now: T + 20 * S,
    expect: { kind: 'publish', epoch: 5, because: 'first' },
  },
];

describe('nextAction: the make-before-break table', () => {
  it.each(rows)('$row', (r) => {
    const input: ScheduleInput = {
      epochs: r.epochs,
      acks: r.acks ?? new Map(),
      holders: holdersOf(r.epochs),
      members: r.members ?? ALL,
      now: r.now,
      config,
      request: r.request ?? null,
      unrecoverable: new Set(r.unrecoverable ?? []),
    };
    const action = nextAction(input);
    expect(action).toMatchObject(r.expect);
    if (r.reason) expect(action.kind === 'wait' ? action.reason : '').toMatch(r.reason);
  });
});

describe('the default schedule (injected clock)', () => {
  it('rotates at exactly 12 hours after activation', () => {
    const defaults = scheduleConfig();
    expect(defaults.intervalMs).toBe(12 * H);
    const epochs = [active(1, T, ['h1']), standby(2, T, ['h1'])];
    const at = (now: number) =>
      nextAction({
        epochs,
        acks: acked(2, ['h1']),
        holders: holdersOf(epochs),
        members: ['h1'],
        now,
        config: defaults,
      });
    expect(at(T + 12 * H - 1)).toEqual({ kind: 'wait', until: T + 12 * H, reason: 'epoch 1 rotates on the timer' });
    expect(at(T + 12 * H)).toEqual({
      kind: 'activate',
      epoch: 2,
      because: 'all-acked',
      missing: [],
      rotation: 'interval',
    });
    expect(nextRotationAt(epochs, defaults)).toBe(T + 12 * H);
  });
});

describe('nextRotationAt (status API)', () => {
  it('is activatedAt(current) + interval, null while no epoch seals yet', () => {
    expect(nextRotationAt([], config)).toBeNull();
    expect(nextRotationAt([published(1, T)], config)).toBeNull();
    expect(nextRotationAt([active(1, T), published(2, T + S)], config)).toBe(T + 12 * H);
    expect(nextRotationAt([retired(1, T), active(2, T + H)], config)).toBe(T + 13 * H);
  });
});

describe('scheduleConfig', () => {
  it('fills the defaults and refuses nonsense', () => {
    expect(scheduleConfig()).toEqual(DEFAULT_SCHEDULE_CONFIG);
    expect(scheduleConfig({ intervalMs: 5 * S }).intervalMs).toBe(5 * S);
    expect(() => scheduleConfig({ intervalMs: 0 })).toThrow(/intervalMs/);
    expect(() => scheduleConfig({ graceMs: -1 })).toThrow(/graceMs/);
    expect(() => scheduleConfig({ ackTimeoutMs: Number.NaN })).toThrow(/ackTimeoutMs/);
  });
});

describe('memberHosts', () => {
  it('leaves out Windows hosts, which cannot encrypt', () => {
    const hosts = [
      { id: 'a', os: 'linux' },
      { id: 'w', os: 'Windows' },
      { id: 'b', os: 'linux' },
    ];
    expect(memberHosts(hosts).map((h) => h.id)).toEqual(['a', 'b']);
  });
});

/*
 * The schedule driven through many rotations by a tiny simulated leader (perform each
 * action on an in-memory record list, members ack at random, one host leaves and comes
 * back, time moves in random steps): the invariants docs/keys.md "Rotation" states hold
 * in every state reached.
 */
describe('invariants over many rotations', () => {
  it('numbers span ≤ 3 (distinct mod 4), one published at a time, outbound only forward, a standby most of the time', () => {
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const cfg = scheduleConfig({ intervalMs: 50 * S, ackTimeoutMs: 5 * S, graceMs: 3 * S, retiredLingerMs: 4 * S });
    let epochs: KeyEpochRecord[] = [];
    const holders = new Map<number, Set<string>>();
    let members = ALL;
    let now = T;
    let lastCurrent = 0;
    let request: { afterEpoch: number } | null = null;
    const publishedEpochs: number[] = [];
    let withStandby = 0;
    let departedActivations = 0;
    for (let step = 0; step < 5000; step++) {
      if (rand(10) === 0) request = { afterEpoch: epochs.filter((r) => r.state === 'active').pop()?.epoch ?? 0 };
      if (rand(50) === 0) members = members.length === 3 ? ['h1', 'h2'] : ALL; // h3 leaves, or comes back
      const acks = new Map(
        epochs
          .filter((r) => r.state === 'published')
          .map((r) => [r.epoch, new Set(rand(4) === 0 ? ['h1'] : [...(holders.get(r.epoch) ?? [])])]),
      );
      const a = nextAction({ epochs, acks, holders, members, now, config: cfg, request });
      const set = (e: number, patch: Partial<KeyEpochRecord>) =>
        (epochs = epochs.map((r) => (r.epoch === e ? { ...r, ...patch } : r)));
      switch (a.kind) {
        case 'publish':
          publishedEpochs.push(a.epoch);
          epochs = [...epochs, { networkId: 'n', epoch: a.epoch, state: 'published', publishedAt: now, copies: 0 }];
          holders.set(a.epoch, new Set(members));
          break;
        case 'activate': {
          const left = [...holders.get(a.epoch)!].some((h) => !members.includes(h));
          const oldest = Math.min(...epochs.map((r) => r.epoch));
          const newest = Math.max(...epochs.map((r) => r.epoch));
          // Never hand a host that left the next epoch while a replacement fits, or will once the older
          // epochs go: only one published for this very rotation (the current epoch is the oldest).
          const current = epochs.filter((r) => r.state === 'active').pop()?.epoch;
          if (left) expect(newest + 1 - oldest).toBeGreaterThanOrEqual(MAX_LIVE_EPOCHS);
          if (left) expect(oldest).toBe(current);
          if (left) departedActivations++;
          set(a.epoch, { state: 'active', activatedAt: now });
          break;
        }
        case 'retire':
          set(a.epoch, { state: 'retired', retiredAt: now, copies: 0 });
          holders.delete(a.epoch);
          break;
        case 'delete':
          epochs = epochs.filter((r) => r.epoch !== a.epoch);
          holders.delete(a.epoch);
          break;
        case 'rewrap':
          for (const h of a.hosts) holders.get(a.epoch)!.add(h);
          set(a.epoch, { wrappedAt: now });
          break;
        case 'wait':
          expect(a.until === null || a.until > now).toBe(true);
          now = a.until !== null && rand(2) === 0 ? a.until : now + 1 + rand(4 * S);
      }
      const numbers = epochs.map((r) => r.epoch).sort((x, y) => x - y);
      if (numbers.length > 0) expect(numbers[numbers.length - 1]! - numbers[0]!).toBeLessThan(MAX_LIVE_EPOCHS);
      expect(new Set(numbers.map((n) => n % 4)).size).toBe(numbers.length);
      expect(epochs.filter((r) => r.state === 'published').length).toBeLessThanOrEqual(1);
      const current = epochs.filter((r) => r.state === 'active').pop()?.epoch ?? lastCurrent;
      expect(current).toBeGreaterThanOrEqual(lastCurrent);
      lastCurrent = current;
      if (epochs.some((r) => r.state === 'published' && r.epoch > current)) withStandby++;
    }
    expect(publishedEpochs).toEqual(publishedEpochs.map((_, i) => i + 1)); // 1, 2, 3, ... never a gap or a reuse
    expect(publishedEpochs.length).toBeGreaterThan(50);
    expect(withStandby / 5000).toBeGreaterThan(0.5);
    expect(departedActivations).toBeLessThan(publishedEpochs.length / 4);
  });
});
