import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { bytesToHex } from '../../src/crypto/bytes.js';
import { SecretKey } from '../../src/crypto/secret.js';
import { generateX25519KeyPair } from '../../src/crypto/x25519.js';
import { EpochInstaller, type EpochSink } from '../../src/keyrotation/installer.js';
import { wrapForHost } from '../../src/keyrotation/wrapping.js';
import { StoreError } from '../../src/store/errors.js';
import type { EpochState, KeyEpochRecord } from '../../src/store/types.js';
import { epochDelete, epochPut, ManualClock, RecordingSink } from './harness.js';

/*
 * The member side of make-before-break, as a table (docs/keys.md "Rotation"): what this host's
 * gateway is told to do for each state of the epoch records. Steps, in order:
 * install inbound → ack → switch outbound → retire.
 */

const NET = 'net1';
const me = generateX25519KeyPair();
const other = generateX25519KeyPair();
const ME = { id: 'me', publicKey: bytesToHex(me.publicKey) };
const OTHER = { id: 'other', publicKey: bytesToHex(other.publicKey) };
const secrets = new Map<number, SecretKey>();
const secretOf = (epoch: number): SecretKey => {
  if (!secrets.has(epoch)) secrets.set(epoch, new SecretKey(randomBytes(32)));
  return secrets.get(epoch)!;
};

/** What etcd holds beside each record made here: host id → that host's wrapped copy (Store.getCopy). */
const copiesOf = new WeakMap<KeyEpochRecord, Record<string, string>>();

function rec(epoch: number, state: EpochState, members = [ME, OTHER]): KeyEpochRecord {
  const wrapped =
    state === 'retired'
      ? {}
      : Object.fromEntries(members.map((h) => [h.id, wrapForHost(secretOf(epoch), h, NET, epoch)]));
  const r: KeyEpochRecord = {
    networkId: NET,
    epoch,
    state,
    publishedAt: 1000 * epoch,
    ...(state !== 'published' ? { activatedAt: 1000 * epoch + 500 } : {}),
    ...(state === 'retired' ? { retiredAt: 1000 * epoch + 900 } : {}),
    copies: Object.keys(wrapped).length,
  };
  copiesOf.set(r, wrapped);
  return r;
}

/** This host's copy of a record made by rec(). */
const myCopy = async (r: KeyEpochRecord): Promise<string | null> => copiesOf.get(r)?.me ?? null;

function makeInstaller(sink: EpochSink = new RecordingSink(), acks: string[] = [], failAck = false) {
  const logs: Array<{ event: string; fields?: Record<string, unknown> }> = [];
  const installer = new EpochInstaller({
    self: { hostId: 'me', privateKey: me.privateKey },
    sink,
    ack: async (n, e) => {
      if (failAck) throw new Error('etcd unreachable');
      acks.push(`ack ${e}`);
      (sink as RecordingSink).calls?.push(['ack', n, e]);
    },
    copy: myCopy,
    log: (event, fields) => logs.push({ event, ...(fields ? { fields } : {}) }),
    retryMs: 60_000,
  });
  return { installer, sink: sink as RecordingSink, logs, acks };
}

interface Row {
  row: string;
  before: KeyEpochRecord[][];
  then: KeyEpochRecord[];
  expect: string[];
}

const rows: Row[] = [
  {
    row: 'published (member) → install inbound, then ack',
    before: [],
    then: [rec(1, 'published')],
    expect: ['install 1', 'ack 1'],
  },
  {
    row: 'published → active → switch outbound',
    before: [[rec(1, 'published')]],
    then: [rec(1, 'active')],
    expect: ['activate 1'],
  },
  {
    row: 'a fresh host finding an active epoch → install, switch (no ack: nobody waits for it)',
    before: [],
    then: [rec(1, 'active')],
    expect: ['install 1', 'activate 1'],
  },
  {
    row: 'next epoch published → install its inbound and ack; outbound stays',
    before: [[rec(1, 'active')]],
    then: [rec(1, 'active'), rec(2, 'published')],
    expect: ['install 2', 'ack 2'],
  },
  {
    row: 'next epoch active → outbound moves to it; the previous stays installed',
    before: [[rec(1, 'active')], [rec(1, 'active'), rec(2, 'published')]],
    then: [rec(1, 'active'), rec(2, 'active')],
    expect: ['activate 2'],
  },
  {
    row: 'a host behind: next active and previous retired in one step → outbound moves first, then the previous goes',
    before: [[rec(1, 'active')], [rec(1, 'active'), rec(2, 'published')]],
    then: [rec(1, 'retired'), rec(2, 'active')],
    expect: ['activate 2', 'retire 1'],
  },
  {
    row: 'previous retired → its SAs go',
    before: [[rec(1, 'active'), rec(2, 'active')]],
    then: [rec(1, 'retired'), rec(2, 'active')],
    expect: ['retire 1'],
  },
  {
    row: 'previous deleted (retired state missed) → its SAs go',
    before: [[rec(1, 'active'), rec(2, 'active')]],
    then: [rec(2, 'active')],
    expect: ['retire 1'],
  },
  {
    row: 'restart replay: previous in grace, current, next → all inbound, ack next, outbound current only',
    before: [],
    then: [rec(1, 'active'), rec(2, 'active'), rec(3, 'published')],
    expect: ['install 1', 'install 2', 'install 3', 'ack 3', 'activate 2'],
  },
  {
    row: 'the same records again → nothing (idempotent)',
    before: [[rec(1, 'active'), rec(2, 'published')]],
    then: [rec(1, 'active'), rec(2, 'published')],
    expect: [],
  },
  {
    row: 'retired epoch never installed → nothing',
    before: [],
    then: [rec(1, 'retired'), rec(2, 'active')],
    expect: ['install 2', 'activate 2'],
  },
  {
    row: 'not a member (no wrapped copy) → nothing installed, no ack',
    before: [],
    then: [rec(1, 'published', [OTHER])],
    expect: [],
  },
  {
    row: 'current retired with no newer epoch installed here → retire (fail closed)',
    before: [[rec(1, 'active')]],
    then: [rec(1, 'retired'), rec(2, 'active', [OTHER])],
    expect: ['retire 1'],
  },
  {
    row: 'a jump after a watch gap ({1, 2, 3} → {2 retired, 3 active, 4 published}) → outbound to 3 first (installed already), retire 1 and 2 before installing 4, then ack 4',
    before: [[rec(1, 'active'), rec(2, 'active'), rec(3, 'published')]],
    then: [rec(2, 'retired'), rec(3, 'active'), rec(4, 'published')],
    expect: ['activate 3', 'retire 1', 'retire 2', 'install 4', 'ack 4'],
  },
];

describe('EpochInstaller: the make-before-break table (member side)', () => {
  it.each(rows)('$row', async (r) => {
    const { installer, sink } = makeInstaller();
    for (const b of r.before) await installer.sync(NET, b);
    const mark = sink.calls.length;
    await installer.sync(NET, r.then);
    expect(sink.calls.slice(mark).map(([op, , e]) => `${op} ${e}`)).toEqual(r.expect);
  });

  it('installs the secret that was wrapped for this host', async () => {
    const { installer, sink } = makeInstaller();
    await installer.sync(NET, [rec(7, 'published')]);
    expect(sink.secret(NET, 7)).toBe(bytesToHex(secretOf(7).exposeDanger()));
  });
});

/** The data path's limits (vxlan/sa-table.ts): at most 3 live epochs per network, and the SPI carries epoch mod 4. */
class DataPathLikeSink extends RecordingSink {
  override async installEpoch(networkId: string, epoch: number, secret: SecretKey): Promise<void> {
    const live = [...(this.installed.get(networkId) ?? [])].filter((e) => e !== epoch);
    if (live.length >= 3)
      throw new Error(`VEIL_ERR_SA_TOO_MANY_EPOCHS: already ${live.length} live epochs (${live.join(', ')})`);
    const clash = live.find((e) => e % 4 === epoch % 4);
    if (clash !== undefined) throw new Error(`VEIL_ERR_SA_SPI_IN_USE: epoch ${epoch} clashes with epoch ${clash}`);
    await super.installEpoch(networkId, epoch, secret);
  }
}

describe('EpochInstaller: retire before install (the data path holds at most 3 epochs, SPIs by epoch mod 4)', () => {
  it('a resync that jumps two steps installs the new epoch on the first try: the gone epochs are retired first', async () => {
    const { installer, sink, logs } = makeInstaller(new DataPathLikeSink());
    await installer.sync(NET, [rec(1, 'active'), rec(2, 'active'), rec(3, 'published')]);
    expect(sink.installed.get(NET)).toEqual(new Set([1, 2, 3]));
    // The watch missed 2 → active... 1 deleted, 2 retired, 3 active, 4 published (a compaction resync).
    await installer.applySnapshot(
      [rec(2, 'retired'), rec(3, 'active'), rec(4, 'published')].map((r) => ({
        key: `keys/${NET}/${r.epoch}`,
        value: r,
      })),
      100,
    );
    expect(logs.filter((l) => l.event.startsWith('epoch install failed'))).toEqual([]);
    expect(sink.installed.get(NET)).toEqual(new Set([3, 4]));
    expect(sink.outbound.get(NET)).toBe(3);
    expect(installer.status().networks[0]!.epochs.map((e) => [e.epoch, e.installed, e.acked])).toEqual([
      [2, false, false],
      [3, true, true],
      [4, true, true],
    ]);
    expect(installer.status().counters.installFailures).toBe(0);
  });
});

describe('EpochInstaller: failures stay inside', () => {
  it('not a member: counted and logged once, nothing installed', async () => {
    const { installer, sink, logs } = makeInstaller();
    const r = rec(1, 'published', [OTHER]);
    await installer.sync(NET, [r]);
    await installer.sync(NET, [r]);
    expect(sink.calls).toEqual([]);
    expect(installer.status().counters.notMember).toBe(1);
    expect(logs.filter((l) => l.event.startsWith('not a member'))).toHaveLength(1);
    expect(installer.status().networks[0]!.epochs[0]).toMatchObject({
      epoch: 1,
      installed: false,
      problem: 'not-member',
    });
  });

  it('a copy that does not unwrap: VEIL_ERR_KEY_UNAVAILABLE logged, nothing installed, no throw; a rewrap is tried again', async () => {
    const { installer, sink, logs } = makeInstaller();
    const bad = rec(1, 'published');
    copiesOf.get(bad)!.me = copiesOf.get(bad)!.other!; // another host's copy under my name: AAD and key both differ
    await expect(installer.sync(NET, [bad])).resolves.toBeUndefined();
    expect(sink.calls).toEqual([]);
    expect(installer.status().counters.unwrapFailures).toBe(1);
    expect(logs.find((l) => l.fields?.code === 'VEIL_ERR_KEY_UNAVAILABLE')).toMatchObject({
      fields: { network: NET, epoch: 1 },
    });
    await installer.sync(NET, [bad]); // the same record: the copy is not read again
    expect(installer.status().counters.unwrapFailures).toBe(1);
    const rewrapped = rec(1, 'published');
    rewrapped.copies = 3; // a rewrap for another host changes the count; this host's copy stays bad
    copiesOf.get(rewrapped)!.me = copiesOf.get(bad)!.me!;
    await installer.sync(NET, [rewrapped]); // read again, the same copy: not counted again
    expect(installer.status().counters.unwrapFailures).toBe(1);
    const good = rec(1, 'published');
    good.copies = 4; // rewrapped for this host
    await installer.sync(NET, [good]);
    expect(sink.trace(NET)).toEqual(['install 1', 'ack 1']);
  });

  it('a copy that cannot be read (etcd unreachable): counted, retried, and installed once it can', async () => {
    const clock = new ManualClock(1_000_000);
    let reachable = false;
    const sink = new RecordingSink();
    const installer = new EpochInstaller({
      self: { hostId: 'me', privateKey: me.privateKey },
      sink,
      ack: async () => undefined,
      copy: async (r) => {
        if (!reachable) throw new StoreError('VEIL_ERR_STORE_UNAVAILABLE', 'etcd unreachable');
        return myCopy(r);
      },
      clock,
      retryMs: 100,
    });
    await expect(installer.sync(NET, [rec(1, 'active')])).resolves.toBeUndefined();
    expect(sink.calls).toEqual([]);
    expect(installer.status().counters).toMatchObject({ copyReadFailures: 1, notMember: 0 });
    reachable = true;
    clock.advance(100);
    await installer.idle();
    expect(sink.trace(NET)).toEqual(['install 1', 'activate 1']);
    installer.close();
  });

  it('a garbage copy (not base64 of anything) never throws', async () => {
    const { installer, sink } = makeInstaller();
    const r = rec(1, 'active');
    copiesOf.get(r)!.me = 'AAAA';
    await expect(installer.sync(NET, [r])).resolves.toBeUndefined();
    expect(sink.calls).toEqual([]);
  });

  it('a sink that throws: logged, retried on the next event, never rejects', async () => {
    let fail = true;
    const inner = new RecordingSink();
    const sink: EpochSink = {
      installEpoch: async (n, e, s) => {
        if (fail) throw new Error('netlink says no');
        await inner.installEpoch(n, e, s);
      },
      activateEpoch: (n, e) => inner.activateEpoch(n, e),
      retireEpoch: (n, e) => inner.retireEpoch(n, e),
    };
    const { installer, logs } = makeInstaller(sink);
    await expect(installer.sync(NET, [rec(1, 'active')])).resolves.toBeUndefined();
    expect(logs.some((l) => l.event.startsWith('epoch install failed'))).toBe(true);
    expect(installer.status().networks[0]!.epochs[0]!.problem).toBe('install-failed');
    fail = false;
    await installer.sync(NET, [rec(1, 'active')]);
    expect(inner.trace(NET)).toEqual(['install 1', 'activate 1']);
  });

  it('a sink that says the network is gone (VEIL_ERR_NOT_FOUND): its records are dropped and nothing is retried', async () => {
    const clock = new ManualClock(1_000_000);
    let attempts = 0;
    const inner = new RecordingSink();
    const sink: EpochSink = {
      installEpoch: async () => {
        attempts++;
        throw new StoreError('VEIL_ERR_NOT_FOUND', `network ${NET}`); // the agent's getNetwork: deleted in etcd
      },
      activateEpoch: (n, e) => inner.activateEpoch(n, e),
      retireEpoch: (n, e) => inner.retireEpoch(n, e),
    };
    const logs: Array<{ event: string; fields?: Record<string, unknown> }> = [];
    const installer = new EpochInstaller({
      self: { hostId: 'me', privateKey: me.privateKey },
      sink,
      ack: async () => undefined,
      copy: myCopy,
      clock,
      retryMs: 100,
      log: (event, fields) => logs.push({ event, ...(fields ? { fields } : {}) }),
    });
    await installer.sync(NET, [rec(1, 'active')], 10);
    for (let i = 0; i < 5; i++) {
      clock.advance(1000);
      await installer.idle();
    }
    expect(attempts).toBe(1);
    expect(installer.status().networks).toEqual([]);
    expect(logs.find((l) => l.event.startsWith('network gone'))?.fields).toMatchObject({ network: NET });
    // A later record for it (the network exists after all) is tried again.
    await installer.applyEvents([{ type: 'put', key: `keys/${NET}/2`, value: rec(2, 'active'), revision: 11 }]);
    expect(attempts).toBe(2);
    installer.close();
  });

  it("an install failing over and over stops being retried once the network's keys/ are deleted (network removed)", async () => {
    const clock = new ManualClock(1_000_000);
    let attempts = 0;
    const sink: EpochSink = {
      installEpoch: async () => {
        attempts++;
        throw new Error('network 4242 is not added');
      },
      activateEpoch: async () => undefined,
      retireEpoch: async () => undefined,
    };
    const installer = new EpochInstaller({
      self: { hostId: 'me', privateKey: me.privateKey },
      sink,
      ack: async () => undefined,
      copy: myCopy,
      clock,
      retryMs: 100,
    });
    await installer.sync(NET, [rec(1, 'active')], 10);
    clock.advance(100);
    await installer.idle();
    expect(attempts).toBe(2); // retried while the record is there
    await installer.applyEvents([{ type: 'delete', key: `keys/${NET}/1`, value: null, revision: 12 }]);
    const after = attempts;
    for (let i = 0; i < 5; i++) {
      clock.advance(1000);
      await installer.idle();
    }
    expect(attempts).toBe(after);
    expect(installer.status().networks).toEqual([]);
    installer.close();
  });

  it('an ack that fails (etcd unreachable) is retried later; the inbound SAs stay', async () => {
    const acks: string[] = [];
    const { installer, sink } = makeInstaller(new RecordingSink(), acks, true);
    await installer.sync(NET, [rec(1, 'published')]);
    expect(sink.trace(NET)).toEqual(['install 1']);
    expect(installer.status().counters.ackFailures).toBe(1);
    expect(installer.status().networks[0]!.epochs[0]).toMatchObject({ installed: true, acked: false });
  });
});

describe('EpochInstaller: events, snapshots, status', () => {
  const put = epochPut;
  const del = (epoch: number, revision: number) => epochDelete(NET, epoch, revision);

  it('follows watch events, drops events older than the last listing, ignores other keys', async () => {
    const { installer, sink } = makeInstaller();
    await installer.sync(NET, [rec(1, 'active')], 10);
    await installer.applyEvents([
      put(rec(2, 'published'), 9),
      { type: 'put', key: 'hosts/x', value: {}, revision: 11 },
    ]);
    expect(sink.trace(NET)).toEqual(['install 1', 'activate 1']); // revision 9 is already in the listing of revision 10
    await installer.applyEvents([
      put(rec(2, 'published'), 12),
      put(rec(2, 'active'), 13),
      put(rec(1, 'retired'), 14),
      del(1, 15),
    ]);
    // One batch that ends with 1 deleted: 1 goes first, then 2 comes in (retire → install → ack → outbound).
    expect(sink.trace(NET)).toEqual(['install 1', 'activate 1', 'retire 1', 'install 2', 'activate 2']);
  });

  it('a resync snapshot replaces everything (a network missing from it is retired)', async () => {
    const { installer, sink } = makeInstaller();
    await installer.sync(NET, [rec(1, 'active')]);
    await installer.applySnapshot([{ key: 'networks/x', value: {} }], 20);
    expect(sink.trace(NET)).toEqual(['install 1', 'activate 1', 'retire 1']);
  });

  it('status: epochs, states, timestamps, what is installed, outbound, waiting — never key bytes', async () => {
    const { installer } = makeInstaller();
    await installer.sync(NET, [rec(1, 'active'), rec(2, 'published')]);
    installer.setStoreReachable(false, 'connection refused');
    const s = installer.status();
    expect(s.networks[0]).toMatchObject({
      networkId: NET,
      outboundEpoch: 1,
      epochs: [
        { epoch: 1, state: 'active', publishedAt: 1000, activatedAt: 1500, installed: true, outbound: true },
        { epoch: 2, state: 'published', installed: true, acked: true, outbound: false },
      ],
    });
    expect(s.networks[0]!.waiting).toMatch(/etcd unreachable \(connection refused\): current SAs stay, rotation waits/);
    expect(s.store).toMatchObject({ reachable: false, detail: 'connection refused' });
    // Reachable, an installed standby is nothing to wait for: it waits for its rotation.
    installer.setStoreReachable(true);
    expect(installer.status().networks[0]!.waiting).toBeNull();
    const text = JSON.stringify(s);
    for (const e of [1, 2]) {
      expect(text).not.toContain(bytesToHex(secretOf(e).exposeDanger()));
      expect(text).not.toContain(Buffer.from(secretOf(e).exposeDanger()).toString('base64'));
    }
    expect(text).not.toContain('wrapped');
  });

  it('removeNetwork retires what was installed', async () => {
    const { installer, sink } = makeInstaller();
    await installer.sync(NET, [rec(1, 'active'), rec(2, 'published')]);
    await installer.removeNetwork(NET);
    expect(sink.trace(NET).slice(-2)).toEqual(['retire 1', 'retire 2']);
    expect(installer.status().networks).toEqual([]);
  });
});
