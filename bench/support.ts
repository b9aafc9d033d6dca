// What the control-plane benches (rotation, scale) share: quantiles, polling, and their reference,
// one etcd put reaching one watcher per client.
import type { Etcd3, Watcher } from 'etcd3';
import { bytesToHex } from '../src/crypto/bytes.js';
import type { SecretKey } from '../src/crypto/secret.js';
import { generateX25519KeyPair } from '../src/crypto/x25519.js';
import { EpochFollower } from '../src/keyrotation/follower.js';
import { EpochInstaller, type EpochSink } from '../src/keyrotation/installer.js';
import { KeyScheduleLeader } from '../src/keyrotation/leader.js';
import { storeRotationRequests } from '../src/keyrotation/requests.js';
import type { ScheduleConfig } from '../src/keyrotation/schedule.js';
import type { LogFn } from '../src/keyrotation/seams.js';
import { EtcdStore } from '../src/store/etcd.js';
import { keys } from '../src/store/layout.js';
import type { HostLease } from '../src/store/types.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
}

export const median = (xs: number[]) => quantile(xs, 0.5);

/** Polls `get` every `everyMs` until it returns something truthy; throws after `timeoutMs`. */
export async function until<T>(
  get: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs: number,
  what: string,
  everyMs = 5,
): Promise<T> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (v) return v;
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(everyMs);
  }
}

/**
 * The reference: one put reaching one watcher per client. measure() times one round, from just
 * before the put to the last watcher's event; a bench interleaves rounds with what it measures, so
 * both see the same load (the hosts' watches and lease keepalives, the leader).
 */
/** A reference round not seen by every watcher within this long is reported lost, not waited for. */
const ROUND_TIMEOUT_MS = 10_000;

export async function fanout(clients: Etcd3[]): Promise<{ measure(): Promise<number | null>; close(): Promise<void> }> {
  const key = '/bench/fanout';
  const seen = new Map<number, number>();
  let expected = 0;
  let done: (() => void) | null = null;
  const watchers: Watcher[] = await Promise.all(clients.map((c) => c.watch().key(key).create()));
  for (const w of watchers) {
    w.on('put', (kv) => {
      const round = Number(kv.value.toString());
      const n = (seen.get(round) ?? 0) + 1;
      seen.set(round, n);
      if (round === expected && n === watchers.length) done?.();
    });
  }
  return {
    /** One round's time, or null when some watcher had not seen it after ROUND_TIMEOUT_MS (a lost round). */
    async measure() {
      expected++;
      let timer: NodeJS.Timeout | undefined;
      const all = new Promise<boolean>((r) => {
        done = () => r(true);
        timer = setTimeout(() => r(false), ROUND_TIMEOUT_MS);
      });
      const t0 = performance.now();
      await clients[0]!.put(key).value(String(expected));
      const complete = await all;
      clearTimeout(timer);
      return complete ? performance.now() - t0 : null;
    },
    close: async () => void (await Promise.all(watchers.map((w) => w.cancel()))),
  };
}

/**
 * One simulated host's key-schedule side: its own etcd client and registered host lease, an
 * EpochInstaller and EpochFollower whose sink records when it was told to install and to activate
 * each epoch. `leader` also gives it the KeyScheduleLeader (not started).
 */
export interface SimHost {
  id: string;
  store: EtcdStore;
  lease: HostLease;
  installer: EpochInstaller;
  follower: EpochFollower;
  self: { hostId: string; privateKey: SecretKey };
  /** epoch → when the sink was told to install (inbound) / activate (outbound). */
  installedAt: Map<number, number>;
  activatedAt: Map<number, number>;
}

export async function simHost(
  endpoints: string[],
  i: number,
  config: ScheduleConfig,
  leaseTtlSeconds: number,
): Promise<SimHost> {
  const id = `sim${String(i + 1).padStart(4, '0')}`;
  const store = new EtcdStore({ endpoints });
  const kp = generateX25519KeyPair();
  const incarnation = bytesToHex(kp.publicKey.subarray(0, 8));
  const lease = await store.registerHost(
    {
      id,
      address: `10.200.${(i >> 8) & 255}.${i & 255}`,
      os: 'linux',
      arch: process.arch,
      version: 'bench',
      publicKey: bytesToHex(kp.publicKey),
      incarnation,
    },
    leaseTtlSeconds,
  );
  const installedAt = new Map<number, number>();
  const activatedAt = new Map<number, number>();
  const sink: EpochSink = {
    installEpoch: async (_n, e) => void installedAt.set(e, performance.now()),
    activateEpoch: async (_n, e) => void activatedAt.set(e, performance.now()),
    retireEpoch: async () => undefined,
  };
  const self = { hostId: id, privateKey: kp.privateKey };
  const installer = new EpochInstaller({
    self,
    sink,
    ack: (networkId, epoch) => store.ack(lease, { networkId, epoch, hostId: id, incarnation, installedAt: Date.now() }),
    copy: (r) => store.getCopy(r.networkId, r.epoch, id),
    config,
  });
  const follower = new EpochFollower({ store, installer });
  return { id, store, lease, installer, follower, self, installedAt, activatedAt };
}

/** The key-schedule leader on a simulated host. */
export function simLeader(host: SimHost, config: ScheduleConfig, log?: LogFn): KeyScheduleLeader {
  return new KeyScheduleLeader({
    store: host.store,
    requests: storeRotationRequests(host.store, keys.rotatePrefix()),
    self: host.self,
    config,
    ...(log ? { log } : {}),
  });
}

/**
 * The standby (docs/keys.md "Rotation"): the epoch published ahead of the next rotation, once every
 * simulated host has installed it; null while there is none or some host has not.
 */
export async function standbyEverywhere(
  store: Pick<SimHost['store'], 'getEpochs'>,
  networkId: string,
  hosts: readonly Pick<SimHost, 'installedAt'>[],
): Promise<number | null> {
  const standby = (await store.getEpochs(networkId)).items.find((r) => r.state === 'published')?.epoch;
  return standby !== undefined && hosts.every((h) => h.installedAt.has(standby)) ? standby : null;
}
