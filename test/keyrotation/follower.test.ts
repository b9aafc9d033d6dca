// The follower hands the installer what etcd says in revision order, whatever order it arrives in:
// here the store delivers a watch event before the epoch listing that was read at an older revision.
import { randomBytes } from 'node:crypto';
import { expect, it } from 'vitest';
import { bytesToHex } from '../../src/crypto/bytes.js';
import { SecretKey } from '../../src/crypto/secret.js';
import { generateX25519KeyPair } from '../../src/crypto/x25519.js';
import { EpochFollower } from '../../src/keyrotation/follower.js';
import { EpochInstaller } from '../../src/keyrotation/installer.js';
import { wrapForHost } from '../../src/keyrotation/wrapping.js';
import type {
  EpochState,
  KeyEpochRecord,
  Listing,
  NetworkRecord,
  Store,
  WatchEvent,
  WatchHandler,
} from '../../src/store/types.js';
import { MemoryBackend } from '../../src/store/memory.js';
import { epochDelete, epochPut, RecordingSink } from './harness.js';

const NET = 'net1';
const me = generateX25519KeyPair();
const ME = { id: 'me', publicKey: bytesToHex(me.publicKey) };
const secrets = new Map<number, SecretKey>();

function rec(epoch: number, state: EpochState): KeyEpochRecord {
  if (!secrets.has(epoch)) secrets.set(epoch, new SecretKey(randomBytes(32)));
  return {
    networkId: NET,
    epoch,
    state,
    publishedAt: 1000 * epoch,
    ...(state !== 'published' ? { activatedAt: 1000 * epoch + 500 } : {}),
    ...(state === 'retired' ? { retiredAt: 1000 * epoch + 900 } : {}),
    copies: state === 'retired' ? 0 : 1,
  };
}
/** This host's copy of every epoch (Store.getCopy). */
const copy = async (r: KeyEpochRecord) => wrapForHost(secrets.get(r.epoch)!, ME, NET, r.epoch);
const put = epochPut;
const del = (epoch: number, revision: number) => epochDelete(NET, epoch, revision);

/** A store whose epoch listing is held back until the test releases it, and whose watch the test drives. */
function slowListingStore() {
  let handler: WatchHandler | undefined;
  let release!: (listing: Listing<KeyEpochRecord>) => void;
  const listing = new Promise<Listing<KeyEpochRecord>>((r) => (release = r));
  const network = { id: NET, name: 'n', encrypted: true } as NetworkRecord;
  const store: Pick<Store, 'listNetworks' | 'getEpochs' | 'watch'> = {
    listNetworks: async () => ({ items: [network], revision: 5 }),
    getEpochs: () => listing,
    watch: async (_prefix, _from, h) => {
      handler = h;
      return { lastRevision: 5, cancel: async () => undefined };
    },
  };
  return {
    store,
    release,
    emit: (events: WatchEvent[]) => handler!.onEvents(events),
    watching: () => handler !== undefined,
  };
}

it('an event delivered before an older listing is not undone by it: the network keeps its outbound epoch', async () => {
  const { store, release, emit, watching } = slowListingStore();
  const sink = new RecordingSink();
  const installer = new EpochInstaller({
    self: { hostId: ME.id, privateKey: me.privateKey },
    sink,
    ack: async () => undefined,
    copy,
  });
  const follower = new EpochFollower({ store, installer });
  const started = follower.start();
  while (!watching()) await new Promise((r) => setImmediate(r));

  // Epoch 3 is published and activated (revisions 9, 10) after the listing was read (revision 8) ...
  emit([put(rec(3, 'published'), 9), put(rec(3, 'active'), 10)]);
  await new Promise((r) => setImmediate(r));
  // ... but the listing, which knows only epoch 2, arrives after those events.
  release({ items: [rec(2, 'active')], revision: 8 });
  await started;
  // Then epoch 2 is retired and deleted, as the leader does once 3 is active everywhere.
  emit([put(rec(2, 'retired'), 12), del(2, 13)]);
  await installer.idle();

  expect(sink.outbound.get(NET)).toBe(3);
  expect([...(sink.installed.get(NET) ?? [])]).toEqual([3]);
  expect(sink.trace(NET)).toEqual(['install 2', 'activate 2', 'install 3', 'activate 3', 'retire 2']);
  await follower.stop();
});

it('etcd back with nothing changed under keys/: the reattached watch alone says so (rotation no longer waits)', async () => {
  const backend = new MemoryBackend();
  const store = backend.client();
  const installer = new EpochInstaller({
    self: { hostId: ME.id, privateKey: me.privateKey },
    sink: new RecordingSink(),
    ack: async () => undefined,
    copy,
  });
  const follower = new EpochFollower({ store, installer });
  await follower.start();
  expect(installer.status().store.reachable).toBe(true);
  store.setReachable(false);
  expect(installer.status().store).toMatchObject({
    reachable: false,
    detail: expect.stringMatching(/etcd unreachable/),
  });
  store.setReachable(true);
  expect(installer.status().store.reachable).toBe(true);
  await follower.stop();
  await store.close();
});
