import { randomBytes } from 'node:crypto';
import { bytesToHex } from '../../src/crypto/bytes.js';
import type { SecretKey } from '../../src/crypto/secret.js';
import { generateX25519KeyPair } from '../../src/crypto/x25519.js';
import { EpochFollower } from '../../src/keyrotation/follower.js';
import { EpochInstaller, type EpochSink } from '../../src/keyrotation/installer.js';
import { KeyScheduleLeader, type KeyScheduleLeaderOptions } from '../../src/keyrotation/leader.js';
import type { RotationRequests } from '../../src/keyrotation/requests.js';
import type { Clock, LogFn } from '../../src/keyrotation/seams.js';
import type { HostIdentity } from '../../src/keyrotation/wrapping.js';
import { keys } from '../../src/store/layout.js';
import type { HostLease, KeyEpochRecord, Store, WatchEvent } from '../../src/store/types.js';

/*
 * Simulated hosts for the key-rotation tests: each has its own Store client, a real
 * X25519 identity registered under a lease, an EpochInstaller fed by an EpochFollower,
 * and a recording sink in place of the gateway.
 */

export type SinkCall = ['install' | 'ack' | 'activate' | 'retire', string, number];

/** The gateway's stand-in: records the calls (and copies of the secrets, for the leak scans). */
export class RecordingSink implements EpochSink {
  readonly calls: SinkCall[] = [];
  readonly secrets = new Map<string, Uint8Array>();
  readonly outbound = new Map<string, number>();
  readonly installed = new Map<string, Set<number>>();
  /** When set, installing an epoch from `from` on waits for `open` (to hold a host's ack back). */
  gate: { from: number; open: Promise<void> } | null = null;

  async installEpoch(networkId: string, epoch: number, secret: SecretKey): Promise<void> {
    if (this.gate && epoch >= this.gate.from) await this.gate.open;
    this.secrets.set(`${networkId}/${epoch}`, Uint8Array.from(secret.exposeDanger()));
    if (!this.installed.has(networkId)) this.installed.set(networkId, new Set());
    this.installed.get(networkId)!.add(epoch);
    this.calls.push(['install', networkId, epoch]);
  }
  async activateEpoch(networkId: string, epoch: number): Promise<void> {
    this.outbound.set(networkId, epoch);
    this.calls.push(['activate', networkId, epoch]);
  }
  async retireEpoch(networkId: string, epoch: number): Promise<void> {
    this.installed.get(networkId)?.delete(epoch);
    if (this.outbound.get(networkId) === epoch) this.outbound.delete(networkId);
    this.calls.push(['retire', networkId, epoch]);
  }
  secret(networkId: string, epoch: number): string | undefined {
    const s = this.secrets.get(`${networkId}/${epoch}`);
    return s ? bytesToHex(s) : undefined;
  }
  /** The calls for one network, as "op epoch" strings. */
  trace(networkId: string): string[] {
    return this.calls.filter(([, n]) => n === networkId).map(([op, , e]) => `${op} ${e}`);
  }
}

export interface SimHost {
  id: string;
  store: Store;
  lease: HostLease;
  identity: HostIdentity;
  publicKeyHex: string;
  incarnation: string;
  sink: RecordingSink;
  installer: EpochInstaller;
  follower: EpochFollower;
  logs: Array<{ event: string; fields?: Record<string, unknown> }>;
  /** Stops following etcd (the process keeps its lease unless `leave`). */
  stop(opts?: { leave?: boolean }): Promise<void>;
}

let addressCounter = 10;

export async function startHost(
  store: Store,
  id: string,
  opts: { os?: string; ttlSeconds?: number; clock?: Clock } = {},
): Promise<SimHost> {
  const { privateKey, publicKey } = generateX25519KeyPair();
  const incarnation = randomBytes(8).toString('hex');
  const publicKeyHex = bytesToHex(publicKey);
  const lease = await store.registerHost(
    {
      id,
      address: `192.0.2.${addressCounter++}`,
      os: opts.os ?? 'linux',
      arch: 'x64',
      version: '0.1.0',
      publicKey: publicKeyHex,
      incarnation,
    },
    opts.ttlSeconds ?? 30,
  );
  const identity: HostIdentity = { hostId: id, privateKey };
  const sink = new RecordingSink();
  const logs: SimHost['logs'] = [];
  const log: LogFn = (event, fields) => logs.push({ event, ...(fields ? { fields } : {}) });
  const installer = new EpochInstaller({
    self: identity,
    sink,
    log,
    retryMs: 100,
    ...(opts.clock ? { clock: opts.clock } : {}),
    ack: async (networkId, epoch) => {
      await store.ack(lease, { networkId, epoch, hostId: id, incarnation, installedAt: Date.now() });
      sink.calls.push(['ack', networkId, epoch]);
    },
    copy: (r) => store.getCopy(r.networkId, r.epoch, id),
  });
  const follower = new EpochFollower({ store, installer, log, retryMs: 100 });
  await follower.start();
  return {
    id,
    store,
    lease,
    identity,
    publicKeyHex,
    incarnation,
    sink,
    installer,
    follower,
    logs,
    async stop(o = {}) {
      await follower.stop();
      installer.close();
      if (o.leave) await lease.revoke();
    },
  };
}

export function startLeader(host: SimHost, requests: RotationRequests, extra: Partial<KeyScheduleLeaderOptions> = {}) {
  const logs: Array<{ event: string; fields?: Record<string, unknown> }> = [];
  const leader = new KeyScheduleLeader({
    store: host.store,
    requests,
    self: host.identity,
    config: { ackTimeoutMs: 20_000, graceMs: 150, retiredLingerMs: 150 },
    retryMs: 100,
    log: (event, fields) => logs.push({ event, ...(fields ? { fields } : {}) }),
    ...extra,
  });
  leader.start();
  return { leader, logs };
}

/** A clock that moves only when told; due timers fire in order of their deadline. */
export class ManualClock implements Clock {
  #now: number;
  #timers: Array<{ at: number; fn: () => void; live: boolean }> = [];
  constructor(start: number) {
    this.#now = start;
  }
  now(): number {
    return this.#now;
  }
  setTimer(ms: number, fn: () => void): () => void {
    const t = { at: this.#now + Math.max(0, ms), fn, live: true };
    this.#timers.push(t);
    return () => void (t.live = false);
  }
  advance(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      const due = this.#timers.filter((t) => t.live && t.at <= target).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      due.live = false;
      this.#now = Math.max(this.#now, due.at);
      due.fn();
    }
    this.#now = target;
    this.#timers = this.#timers.filter((t) => t.live);
  }
}

/** Every string a secret could appear as in etcd or a log: hex (both cases), base64, base64url. */
export function secretSpellings(hex: string): string[] {
  const b = Buffer.from(hex, 'hex');
  const b64 = b.toString('base64');
  return [hex, hex.toUpperCase(), b64, b64.replace(/=+$/, ''), b.toString('base64url')];
}

export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const settle = (ms = 50) => new Promise((r) => setTimeout(r, ms));

/** A watch event that writes an epoch record, as the leader's put would arrive. */
export const epochPut = (r: KeyEpochRecord, revision: number): WatchEvent => ({
  type: 'put',
  key: keys.keyEpoch(r.networkId, r.epoch),
  value: r,
  revision,
});

/** A watch event that deletes an epoch record. */
export const epochDelete = (networkId: string, epoch: number, revision: number): WatchEvent => ({
  type: 'delete',
  key: keys.keyEpoch(networkId, epoch),
  value: null,
  revision,
});
