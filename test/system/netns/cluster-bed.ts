// A namespace bed run through the control plane: etcd as one more host on the underlay
// (198.18.0.250, in its own namespace), one `veil gateway --cluster-store ...` per host,
// and containers connected through each host's API, like an operator would.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KeysEpoch, KeysView } from '../../../src/cli/client.js';
import { startEtcd, type EtcdCluster } from '../support/etcd.js';
import { createBed, UNDERLAY_PREFIX_LENGTH, type Bed, type BedProcess } from './bed.js';
import { CLI } from './overlay-bed.js';
import { waitFor } from '../../support/wait.js';

export const ETCD_ADDRESS = '198.18.0.250';

export interface ApiAnswer {
  status: number;
  body: any;
}

export interface ClusterBed {
  bed: Bed;
  dir: string;
  etcd: EtcdCluster;
  gateways: Map<number, BedProcess>;
  socket(hostIndex: number): string;
  api(hostIndex: number, method: string, path: string, body?: unknown): Promise<ApiAnswer>;
  /**
   * Starts (or restarts) host i's gateway; resolves once it says "gateway ready". `launcher` goes
   * before node inside the host's namespace (e.g. `unshare --mount`). A `transient` one (expected to
   * fail) is not started again by ensureGateways.
   */
  startGateway(
    hostIndex: number,
    extraArgs?: string[],
    options?: { launcher?: string[]; transient?: boolean },
  ): Promise<BedProcess>;
  stopGateway(hostIndex: number, signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /**
   * Starts again every gateway that was started once and is not running now (a test that stopped one
   * and failed before restarting it leaves the next test a whole cluster).
   */
  ensureGateways(): Promise<void>;
  /** A container namespace (not connected yet); returns its name and its /run/netns path. */
  container(label: string): Promise<{ ns: string; netns: string }>;
  /** etcdctl inside the etcd namespace. */
  etcdctl(args: string[]): Promise<string>;
  destroy(): Promise<void>;
}

export async function createClusterBed(options: {
  hosts: number;
  etcdMembers?: 1 | 3;
  gatewayArgs?: string[];
  /** Extra flags for one host's gateway, e.g. {2: ['--os', 'windows']}. */
  hostArgs?: Record<number, string[]>;
  /** How many gateways (hosts 1..n) to start now; the others' namespaces wait for cb.startGateway (default: all). */
  startGateways?: number;
  /** "reserved": each gateway makes its own vtep namespace, as on a real host (bed.ts BedOptions). */
  vtep?: 'plumbed' | 'reserved';
  /** The underlay's MTU (bed.ts BedOptions); the gateways read it from their eth0. */
  underlayMtu?: number;
}): Promise<ClusterBed> {
  const bed = await createBed({
    hosts: options.hosts,
    ...(options.vtep ? { vtep: options.vtep } : {}),
    ...(options.underlayMtu ? { underlayMtu: options.underlayMtu } : {}),
  });
  const dir = mkdtempSync(join(tmpdir(), 'veil-cluster-'));
  const gateways = new Map<number, BedProcess>();
  /** Hosts whose gateway was started, with the extra flags it was started with last. */
  const started = new Map<number, string[]>();
  let etcd: EtcdCluster | undefined;
  const destroy = async () => {
    await Promise.all([...gateways.values()].map((g) => g.stop(5000)));
    await etcd?.stop();
    await bed.destroy();
    // resolv.conf files of the hosts, and of containers a killed gateway could not clean up.
    if (existsSync('/etc/netns'))
      for (const d of readdirSync('/etc/netns'))
        if (d.startsWith(bed.prefix)) rmSync(join('/etc/netns', d), { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const ens = await bed.namespace('e');
    await bed.exec(bed.hub, ['ip', 'link', 'add', 'etcd0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ens]);
    await bed.exec(bed.hub, ['ip', 'link', 'set', 'etcd0', 'master', 'ul0', 'up']);
    await bed.exec(ens, ['ip', 'addr', 'add', `${ETCD_ADDRESS}/${UNDERLAY_PREFIX_LENGTH}`, 'dev', 'eth0']);
    await bed.exec(ens, ['ip', 'link', 'set', 'eth0', 'up']);
    etcd = await startEtcd({ members: options.etcdMembers ?? 1, netns: ens, address: ETCD_ADDRESS });
    const store = `etcd://${etcd.endpoints.map((e) => e.replace('http://', '')).join(',')}`;
    const socket = (i: number) => join(dir, `h${i}.sock`);
    const cb: ClusterBed = {
      bed,
      dir,
      etcd,
      gateways,
      socket,
      api: (i, method, path, body) => apiRequest(socket(i), method, path, body),
      async startGateway(i, extraArgs = [], startOptions = {}) {
        const host = bed.hosts[i - 1]!;
        // The gateway forwards DNS it cannot answer to its netns's resolv.conf: pin it to that netns's own
        // loopback, so no test ever reaches the machine's resolvers (a test may put its own fake there first).
        const resolv = `/etc/netns/${host.netns}/resolv.conf`;
        if (!existsSync(resolv)) {
          mkdirSync(`/etc/netns/${host.netns}`, { recursive: true });
          writeFileSync(resolv, 'nameserver 127.0.0.1\n');
        }
        if (!startOptions.transient) started.set(i, extraArgs);
        const gw = bed.spawn(
          host.netns,
          [
            ...(startOptions.launcher ?? []),
            process.execPath,
            CLI,
            'gateway',
            '--cluster-store',
            store,
            '--cluster-advertise',
            host.underlayAddress,
            '--host-id',
            `h${i}`,
            '--data-dir',
            join(dir, `h${i}`),
            '--api-socket',
            socket(i),
            '--vtep-netns',
            host.vtepNetns,
            '--link-net',
            `169.254.${i}.0`,
            '--lease-ttl',
            '4',
            '--key-grace',
            '2s',
            ...(options.gatewayArgs ?? []),
            ...extraArgs,
          ],
          { lifetime: 'bed' },
        );
        gateways.set(i, gw);
        await gw.waitFor(/gateway ready/, 30_000);
        return gw;
      },
      async stopGateway(i, signal = 'SIGTERM') {
        const gw = gateways.get(i);
        if (!gw) return;
        gateways.delete(i);
        if (signal === 'SIGKILL') {
          gw.child.kill('SIGKILL');
          await gw.exited;
        } else {
          await gw.stop(10_000);
        }
      },
      async ensureGateways() {
        for (const [i, extraArgs] of started) {
          const gw = gateways.get(i);
          if (!gw || gw.child.exitCode !== null || gw.child.signalCode !== null) await cb.startGateway(i, extraArgs);
        }
      },
      async container(label) {
        const ns = await bed.namespace(label);
        return { ns, netns: `/run/netns/${ns}` };
      },
      async etcdctl(args) {
        return (await bed.exec(ens, ['etcdctl', '--endpoints', etcd!.endpoints.join(','), ...args])).stdout;
      },
      destroy,
    };
    for (let i = 1; i <= (options.startGateways ?? options.hosts); i++) await cb.startGateway(i, options.hostArgs?.[i]);
    return cb;
  } catch (err) {
    await destroy();
    throw err;
  }
}

export function apiRequest(socketPath: string, method: string, path: string, body?: unknown): Promise<ApiAnswer> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        socketPath,
        path,
        method,
        headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d: string) => (text += d));
        res.on('end', () => {
          let parsed: unknown = text;
          try {
            parsed = text === '' ? undefined : JSON.parse(text);
          } catch {
            // text/plain (metrics)
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

// ── key rotation helpers (test/system/netns/rotation*.test.ts, bench/rotation.ts) ──────────────────────
// Additive: nothing above depends on them. They read what an operator (or a host) could read: a
// host's API, etcd through etcdctl in its namespace, a host's data dir.

export type { KeysEpoch, KeysView };

/** GET /networks/{id}/keys on host i; throws unless 200. */
export async function keysOf(cb: ClusterBed, hostIndex: number, network: string): Promise<KeysView> {
  const r = await cb.api(hostIndex, 'GET', `/networks/${network}/keys`);
  if (r.status !== 200) throw new Error(`GET keys on h${hostIndex}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as KeysView;
}

/** The epoch host i seals with (OutboundHere), or undefined. */
export function outboundEpoch(view: KeysView): number | undefined {
  return view.Epochs.find((e) => e.OutboundHere)?.Epoch;
}

/** The etcd namespace of the bed (etcdctl runs there). */
export function etcdNamespace(cb: ClusterBed): string {
  return `${cb.bed.prefix}e`;
}

export interface EtcdKv {
  key: string;
  value: Buffer;
  lease: string | null;
  createRevision: number;
  modRevision: number;
}

/** Every key and value under `prefix` as etcd holds it now (etcdctl get --prefix -w json). */
export async function etcdGetPrefix(cb: ClusterBed, prefix: string): Promise<{ revision: number; kvs: EtcdKv[] }> {
  const out = JSON.parse(await cb.etcdctl(['get', '--prefix', prefix, '-w', 'json'])) as {
    header: { revision: number };
    kvs?: Array<{
      key: string;
      value?: string;
      lease?: number | string;
      create_revision: number;
      mod_revision: number;
    }>;
  };
  return {
    revision: Number(out.header.revision),
    kvs: (out.kvs ?? []).map((kv) => ({
      key: Buffer.from(kv.key, 'base64').toString('utf8'),
      value: Buffer.from(kv.value ?? '', 'base64'),
      lease: kv.lease === undefined ? null : String(kv.lease),
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision),
    })),
  };
}

/** A wrapped copy of an epoch secret, as etcd holds it: ~/copies/<network>/<epoch>/<host> (docs/etcd.md). */
export interface EtcdCopy {
  epoch: number;
  hostId: string;
  /** base64, crypto/keywrap.ts's format. */
  wrapped: string;
}

/** Where the network's copies live in etcd (full key prefix). */
export const copiesPrefix = (networkId: string): string => `/veil/v1/~/copies/${networkId}/`;

/** The copies among `kvs` (keys under copiesPrefix), read from the key and value alone. */
export function parseCopies(kvs: ReadonlyArray<{ key: string; value: Buffer }>, networkId: string): EtcdCopy[] {
  const prefix = copiesPrefix(networkId);
  return kvs.flatMap(({ key, value }) => {
    const m = key.startsWith(prefix) ? /^(\d+)\/([^/]+)$/.exec(key.slice(prefix.length)) : null;
    if (!m) return [];
    const { wrapped } = JSON.parse(value.toString('utf8')) as { wrapped: string };
    return [{ epoch: Number(m[1]), hostId: m[2]!, wrapped }];
  });
}

export interface EtcdEvent {
  type: 'put' | 'delete';
  key: string;
  value: Buffer;
  modRevision: number;
}

/**
 * The whole history of `prefix` that etcd still holds (no compaction in a bed): a watch from
 * revision 1 replays every put and delete in order; it ends after `listenMs` of silence.
 */
export async function etcdHistory(cb: ClusterBed, prefix: string, listenMs = 2_000): Promise<EtcdEvent[]> {
  const endpoints = cb.etcd.endpoints.join(',');
  const r = await cb.bed.exec(
    etcdNamespace(cb),
    [
      'timeout',
      '-s',
      'INT',
      String(listenMs / 1000),
      'etcdctl',
      '--endpoints',
      endpoints,
      'watch',
      '--prefix',
      prefix,
      '--rev',
      '1',
      '-w',
      'json',
    ],
    { allowFail: true, timeoutMs: listenMs + 30_000 },
  );
  const events: EtcdEvent[] = [];
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const res = JSON.parse(line) as {
      Events?: Array<{ type?: number | string; kv: { key: string; value?: string; mod_revision: number } }>;
    };
    for (const ev of res.Events ?? []) {
      events.push({
        type: ev.type === 1 || ev.type === 'DELETE' ? 'delete' : 'put',
        key: Buffer.from(ev.kv.key, 'base64').toString('utf8'),
        value: Buffer.from(ev.kv.value ?? '', 'base64'),
        modRevision: Number(ev.kv.mod_revision),
      });
    }
  }
  return events;
}

/** The index (0-based, as cb.etcd.stopMember takes it) of the etcd member that is the raft leader now. */
export async function etcdRaftLeader(cb: ClusterBed): Promise<number> {
  const status = JSON.parse(await cb.etcdctl(['endpoint', 'status', '-w', 'json'])) as Array<{
    Endpoint: string;
    Status: { header: { member_id: number | string }; leader: number | string };
  }>;
  const leader = status.find((s) => String(s.Status.leader) === String(s.Status.header.member_id));
  if (!leader) throw new Error(`no etcd member says it leads: ${JSON.stringify(status)}`);
  return cb.etcd.endpoints.indexOf(leader.Endpoint);
}

/** Host i's static X25519 private key as its gateway keeps it (hex in <data dir>/identity.key). */
export function hostIdentityHex(cb: ClusterBed, hostIndex: number): string {
  return readFileSync(join(cb.dir, `h${hostIndex}`, 'identity.key'), 'utf8').trim();
}

/**
 * A host record put into etcd by hand, under its own lease (etcdctl lease grant): to the schedule
 * a live member that never acks (a hung gateway). Its index is claimed like registerHost does.
 * Returns a function that revokes the lease (the record goes, as when a host dies).
 */
export async function registerFakeHost(
  cb: ClusterBed,
  host: { id: string; index: number; address: string; publicKeyHex: string; os?: string },
  ttlSeconds = 300,
): Promise<{ lease: string; revoke(): Promise<void> }> {
  const granted = await cb.etcdctl(['lease', 'grant', String(ttlSeconds)]);
  const lease = /lease ([0-9a-f]+) granted/.exec(granted)?.[1];
  if (!lease) throw new Error(`etcdctl lease grant: ${granted}`);
  const record = {
    id: host.id,
    index: host.index,
    address: host.address,
    os: host.os ?? 'linux',
    arch: 'x64',
    version: 'fake',
    publicKey: host.publicKeyHex,
    incarnation: 'f'.repeat(16),
  };
  // Same as registerHost: claim hostindex/<n> once (create-if-absent), then the record under the lease.
  const txn = [
    `create("/veil/v1/hostindex/${host.index}") = "0"`,
    '',
    `put /veil/v1/hostindex/${host.index} ${host.id}`,
    '',
    '',
    '',
  ].join('\n');
  await cb.bed.exec(etcdNamespace(cb), [
    'sh',
    '-c',
    `printf '%s' "$1" | etcdctl --endpoints ${cb.etcd.endpoints.join(',')} txn`,
    'txn',
    txn,
  ]);
  await cb.etcdctl(['put', `--lease=${lease}`, `/veil/v1/hosts/${host.id}`, JSON.stringify(record)]);
  return { lease, revoke: async () => void (await cb.etcdctl(['lease', 'revoke', lease])) };
}

export interface PingTally {
  transmitted: number;
  received: number;
  /** ping runs that ended (each prints one summary). */
  runs: number;
  /** ping runs that could not send at all (no route, no interface): no summary, nothing counted above. */
  failedRuns: number;
}

/**
 * A ping that runs until stop(): back-to-back `ping -c <perRun> -i <interval>` runs, so that every
 * echo request sent gets its full reply wait (-W) and nothing in flight is counted lost when the
 * loop ends. stop() lets the current run finish and returns the sum of the runs' summaries.
 */
export function pingLoop(
  cb: ClusterBed,
  ns: string,
  ip: string,
  opts: { interval?: string; perRun?: number; waitS?: number } = {},
): { proc: BedProcess; stop(): Promise<PingTally> } {
  const stopFile = join(cb.dir, `ping-stop-${ns}-${ip}-${Date.now()}`);
  // ping exits 2 when it cannot send at all (its interface gone while a gateway restarts): counted, and
  // retried after a pause rather than at once in a tight loop.
  const script =
    'while [ ! -e "$1" ]; do ping -n -q -c "$2" -i "$3" -W "$4" "$5"; [ $? -ge 2 ] && echo ping-failed && sleep 0.2; done';
  const proc = cb.bed.spawn(ns, [
    'bash',
    '-c',
    script,
    'ping-loop',
    stopFile,
    String(opts.perRun ?? 1000),
    opts.interval ?? '0.002',
    String(opts.waitS ?? 1),
    ip,
  ]);
  return {
    proc,
    async stop() {
      writeFileSync(stopFile, '');
      await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 60_000))]);
      await proc.stop(1_000);
      const tally: PingTally = { transmitted: 0, received: 0, runs: 0, failedRuns: 0 };
      tally.failedRuns = proc.stdout().match(/^ping-failed$/gm)?.length ?? 0;
      for (const m of proc.stdout().matchAll(/(\d+) packets transmitted, (\d+) received/g)) {
        tally.transmitted += Number(m[1]);
        tally.received += Number(m[2]);
        tally.runs++;
      }
      return tally;
    },
  };
}

/** The data-plane drop counters of host i's gateway (GET /status), summed over pairs, plus the unattributed ones. */
export async function gatewayDrops(cb: ClusterBed, hostIndex: number): Promise<Record<string, number>> {
  const s = (await cb.api(hostIndex, 'GET', '/status')).body as {
    pairs: Array<{ drops: Record<string, number> }>;
    unattributedDrops: Record<string, number>;
  };
  const sum: Record<string, number> = {};
  for (const d of [...s.pairs.map((p) => p.drops), s.unattributedDrops])
    for (const [k, v] of Object.entries(d)) sum[k] = (sum[k] ?? 0) + v;
  return sum;
}

export interface ContainerOnNetwork {
  ns: string;
  netns: string;
  ip: string;
}

/**
 * Creates an encrypted network through host 1, waits until every host holds SAs toward every peer
 * (so no frame meets a missing SA: that is fail-closed at bring-up, not the fault a test looks for),
 * connects one container `<label><host>` per host and waits for the first ping around the ring.
 */
export async function encryptedNetworkWithContainers(
  cb: ClusterBed,
  options: { name: string; subnet: string; label: string; hosts: readonly number[] },
): Promise<{ networkId: string; vni: number; containers: Record<number, ContainerOnNetwork> }> {
  const { name, subnet, label, hosts } = options;
  const r = await cb.api(1, 'POST', '/networks', {
    Name: name,
    Options: { encrypted: '' },
    IPAM: { Config: [{ Subnet: subnet }] },
  });
  if (r.status !== 201) throw new Error(`create: ${JSON.stringify(r.body)}`);
  const vni = (await cb.api(1, 'GET', `/networks/${name}`)).body.VNI as number;
  await waitFor(
    async () =>
      (
        await Promise.all(
          hosts.map(async (h) => (await cb.api(h, 'GET', `/networks/${name}/status`)).body.Protected === true),
        )
      ).every(Boolean),
    30_000,
    'every host protected toward every peer',
  );
  const containers: Record<number, ContainerOnNetwork> = {};
  for (const h of hosts) {
    const ct = await cb.container(`${label}${h}`);
    const a = await cb.api(h, 'POST', `/networks/${name}/connect`, {
      Container: `${label}${h}`,
      Sandbox: { Netns: ct.netns },
    });
    if (a.status !== 200) throw new Error(`connect on h${h}: ${JSON.stringify(a.body)}`);
    containers[h] = { ...ct, ip: (a.body.IPv4Address as string).split('/')[0]! };
  }
  for (const [i, a] of hosts.entries()) {
    const b = hosts[(i + 1) % hosts.length]!;
    await waitFor(
      async () =>
        (await cb.bed.exec(containers[a]!.ns, ['ping', '-c', '1', '-W', '1', containers[b]!.ip], { allowFail: true }))
          .code === 0,
      30_000,
      `first ping h${a}→h${b}`,
    );
  }
  return { networkId: r.body.Id as string, vni, containers };
}
