import { existsSync } from 'node:fs';
import type { VtepKind } from './model/vtep.js';
import { HostAgent } from './agent/agent.js';
import { RUNTIME_SWEEP_MS, RuntimeReaper } from './agent/reaper.js';
import type { KeyScheduleApi } from './api/keys.js';
import { bytesToHex } from './crypto/bytes.js';
import type { SecretKey } from './crypto/secret.js';
import type { DnsModel } from './dns/service.js';
import { rotationsDue } from './keyrotation/budget.js';
import { EpochFollower } from './keyrotation/follower.js';
import { EpochInstaller } from './keyrotation/installer.js';
import { KeyScheduleLeader } from './keyrotation/leader.js';
import { requestRotation, storeRotationRequests } from './keyrotation/requests.js';
import type { ScheduleConfig } from './keyrotation/schedule.js';
import { systemClock, type Clock } from './keyrotation/seams.js';
import { isWindows } from './model/windows.js';
import { keys } from './store/layout.js';
import type { EndpointRecord, NetworkRecord, Store } from './store/types.js';
import { VERSION } from './model/version.js';
import type { DataPath } from './vxlan/datapath.js';
import { Gateway } from './vxlan/gateway.js';
import type { Plumbing } from './vxlan/plumbing.js';
import type { SaHost } from './vxlan/sa/derive.js';

/*
 * One host's control plane, wired around its gateway from the dependencies it is given: the real
 * ones in `veil gateway` (main.ts), in-memory ones in the in-process cluster of the unit tier
 * (docs/testing.md "In-process cluster"). Wiring only, like main.ts; one copy of it.
 */

/** The control plane's log: an event and its fields (pino in `veil gateway`). Never key material. */
export type HostLog = (
  level: 'info' | 'warn' | 'error' | 'fatal',
  event: string,
  fields?: Record<string, unknown>,
) => void;

/** The embedded DNS as the control plane drives it (DnsService). */
export interface HostDns {
  start(): Promise<void>;
  stop(options?: { unplumb?: boolean }): Promise<void>;
  attached(endpoint: EndpointRecord, network: NetworkRecord): Promise<void>;
  detached(endpoint: EndpointRecord, network: NetworkRecord | undefined): Promise<void>;
  invalidate(): void;
}

/** What one host's control plane is assembled from; startClusterGateway builds the real ones. */
export interface ClusterHostDeps {
  /** This process's store client (one per process, as one etcd client per gateway). The caller closes it. */
  readonly store: Store;
  readonly plumbing: Plumbing;
  readonly dataPath: DataPath;
  /** Where encrypted networks' frames meet the data path (default: a TAP port where the data path has one). */
  readonly vtep?: VtepKind;
  readonly hostId: string;
  /** The underlay address peers send to (--cluster-advertise). */
  readonly address: string;
  readonly os: string;
  readonly identity: { readonly privateKey: SecretKey; readonly publicKey: Uint8Array };
  /** Drawn at every start (docs/keys.md "Host identity"). */
  readonly incarnation: string;
  /** This host's previous gateway's incarnation, proven gone (src/host/data-dir.ts); its record is replaced. */
  readonly predecessor?: string;
  readonly leaseTtlSeconds: number;
  readonly sequenceBudget: number;
  /** The underlay MTU and where it came from (GET /status). */
  readonly underlayMtu?: { readonly mtu: number; readonly from: string };
  readonly schedule: ScheduleConfig;
  /** For the key schedule's timers and timestamps; the system clock unless a test injects one. */
  readonly clock?: Clock;
  readonly log: HostLog;
  /** Builds the embedded DNS around the agent's model. */
  readonly dns?: (model: DnsModel) => HostDns;
  /** Starts the API last (it reaches everything below it); it is closed first. */
  readonly api?: (host: ClusterHost) => Promise<{ close(): Promise<void> }>;
  /** Ends the process after the host index changed under it (process.exit in `veil gateway`). */
  readonly exit: (code: number) => void;
  /** How often the outbound SAs' sequence use is read (docs/keys.md "Sequence budget"). */
  readonly budgetCheckMs?: number;
  /** How often endpoints CNI runtimes left without DEL are looked for (docs/cni.md "Cleanup"). */
  readonly runtimeSweepMs?: number;
}

/** One host's control plane around its gateway, as assembleClusterHost wires it. */
export interface ClusterHost {
  readonly gateway: Gateway;
  readonly agent: HostAgent;
  /** The embedded DNS, when the host has one. */
  readonly dns: HostDns | undefined;
  readonly installer: EpochInstaller;
  readonly leader: KeyScheduleLeader;
  /** What the API's key routes call: forced rotation (the same request any host may make) and status. */
  readonly keys: KeyScheduleApi;
  /** This host as its SAs name it; `index` is set at registration. */
  readonly self: Readonly<SaHost & { address: string }>;
  /** Gateway, DNS, agent, key follower, leader, API in this order; on a failure what started is stopped (unplumbed) and the error thrown. */
  start(): Promise<void>;
  /** The reverse order; leadership goes first, so another host takes the schedule over at once. */
  stop(options?: { unplumb?: boolean }): Promise<void>;
}

/**
 * Wires one host's control plane around a gateway: Gateway, HostAgent, EpochInstaller fed by an
 * EpochFollower, KeyScheduleLeader, rotation requests on the store, and the sequence-budget check.
 * `veil gateway` (startClusterGateway) and the in-process cluster of the unit tier both use it.
 */
export function assembleClusterHost(deps: ClusterHostDeps): ClusterHost {
  const { store, log, hostId, incarnation, sequenceBudget, schedule } = deps;
  const clock = deps.clock ?? systemClock;
  // The index is allocated at registration; the gateway learns it from the agent before any SA exists.
  const self = { id: hostId, index: 0, address: deps.address, publicKey: deps.identity.publicKey, incarnation };
  const gateway = new Gateway({
    self,
    privateKey: deps.identity.privateKey,
    plumbing: deps.plumbing,
    dataPath: deps.dataPath,
    ...(deps.vtep ? { vtep: deps.vtep } : {}),
    sequenceBudget,
    ...(deps.underlayMtu ? { underlayMtu: deps.underlayMtu } : {}),
    log: (event, fields, level) => log(level ?? 'info', event, fields),
  });
  const keyLog = (event: string, fields?: Record<string, unknown>) => log('info', event, fields);
  const identityForKeys = { hostId, privateKey: deps.identity.privateKey };
  // The DNS service and the installer reach the agent, which is made after them.
  let agentRef: HostAgent | undefined;
  const dns = deps.dns?.({ networks: () => agentRef?.networks() ?? [], endpoints: () => agentRef?.endpoints() ?? [] });
  const installer = new EpochInstaller({
    self: identityForKeys,
    sink: {
      installEpoch: (n, e, s) => agentRef!.epochs.installEpoch(n, e, s),
      activateEpoch: (n, e) => agentRef!.epochs.activateEpoch(n, e),
      retireEpoch: (n, e) => agentRef!.epochs.retireEpoch(n, e),
    },
    // Bound to the host's lease: an ack disappears with the host. The incarnation is the registered one.
    ack: (networkId, epoch) =>
      store.ack(agentRef!.lease!, { networkId, epoch, hostId, incarnation, installedAt: clock.now() }),
    copy: (r) => store.getCopy(r.networkId, r.epoch, hostId),
    log: keyLog,
    config: schedule,
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
  const follower = new EpochFollower({ store, installer, log: keyLog, ...(deps.clock ? { clock: deps.clock } : {}) });
  const requests = storeRotationRequests(store, keys.rotatePrefix());
  // The election lease lives as long as a host lease: a dead leader is replaced as fast as a dead host is dropped.
  const leader = new KeyScheduleLeader({
    store,
    requests,
    self: identityForKeys,
    config: schedule,
    log: keyLog,
    electionTtlSeconds: deps.leaseTtlSeconds,
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
  const agent = new HostAgent({
    store,
    gateway,
    self: {
      id: hostId,
      address: deps.address,
      os: deps.os,
      arch: process.arch,
      version: VERSION,
      publicKey: bytesToHex(deps.identity.publicKey),
      incarnation,
    },
    leaseTtlSeconds: deps.leaseTtlSeconds,
    ...(deps.predecessor !== undefined ? { predecessor: deps.predecessor } : {}),
    log,
    onIndex: (index) => {
      // The SPI carries the index but the key does not: the same key under a new SPI would restart its
      // sequence at 1 (GCM nonce reuse). An index can only change if etcd lost its data; restart instead.
      if (self.index !== 0 && self.index !== index) {
        log(
          'fatal',
          'host index changed under a running gateway (etcd restored?); exiting so a restart gets a new incarnation and new keys',
          { was: self.index, now: index },
        );
        deps.exit(70);
        return;
      }
      self.index = index;
    },
    onReregistered: () => void installer.resetAcks(),
    onNetworkRemoved: (networkId) => void installer.removeNetwork(networkId),
    ...(dns
      ? {
          onEndpointAttached: (endpoint, network) => dns.attached(endpoint, network),
          onEndpointDetached: (endpoint, network) => dns.detached(endpoint, network),
          onModelChanged: () => dns.invalidate(),
        }
      : {}),
  });
  agentRef = agent;
  const keySchedule: KeyScheduleApi = {
    requestRotation: (idOrName, by) => requestRotation({ store, requests }, idOrName, by),
    status: () => ({ installer: installer.status(), leader: leader.status(), config: schedule }),
  };

  // Rotation on a packet budget: local counters (no etcd traffic unless a rotation is due).
  const asked = new Set<string>();
  const checkBudget = () => {
    for (const due of rotationsDue(gateway.status().pairs, sequenceBudget, asked)) {
      asked.add(`${due.vni}/${due.epoch}`);
      const network = agent.networks().find((n) => n.vni === due.vni);
      if (!network) continue;
      log('info', 'outbound SA used half its sequence budget; asking for a rotation', {
        network: network.name,
        epoch: due.epoch,
        peer: due.peer,
        sealed: due.sealed,
        budget: sequenceBudget,
      });
      requestRotation({ store, requests }, network.id, `sequence-budget:${hostId}`, due.epoch).catch((err: Error) => {
        asked.delete(`${due.vni}/${due.epoch}`);
        log('warn', 'could not ask for a rotation; will retry', { network: network.name, error: err.message });
      });
    }
  };
  let budgetTimer: NodeJS.Timeout | undefined;
  const reaper = new RuntimeReaper({
    store,
    endpoints: () => agent.endpoints(),
    hostId,
    exists: existsSync,
    log: (event, fields) => log('info', event, fields),
  });
  const sweepRuntimes = () => {
    reaper.sweep().catch((err: Error) => log('warn', 'runtime endpoint sweep failed', { error: err.message }));
  };
  let sweepTimer: NodeJS.Timeout | undefined;
  let api: { close(): Promise<void> } | undefined;

  const host: ClusterHost = {
    gateway,
    agent,
    dns,
    installer,
    leader,
    keys: keySchedule,
    self,
    async start() {
      try {
        await gateway.start();
        await dns?.start();
        const { warning } = await agent.start();
        if (warning) log('warn', 'Windows host', { warning });
        await follower.start();
        // A Windows host is no member of encrypted networks (it cannot encrypt), so it could never rewrap: it never leads.
        if (!isWindows({ os: deps.os })) leader.start();
        api = await deps.api?.(host);
      } catch (err) {
        await api?.close().catch(() => undefined);
        await leader.stop().catch(() => undefined);
        await follower.stop().catch(() => undefined);
        await agent.stop().catch(() => undefined);
        await dns?.stop({ unplumb: true }).catch(() => undefined);
        await gateway.stop({ unplumb: true }).catch(() => undefined);
        throw err;
      }
      budgetTimer = setInterval(checkBudget, deps.budgetCheckMs ?? 1000);
      budgetTimer.unref();
      sweepTimer = setInterval(sweepRuntimes, deps.runtimeSweepMs ?? RUNTIME_SWEEP_MS);
      sweepTimer.unref();
    },
    async stop(options) {
      clearInterval(budgetTimer);
      clearInterval(sweepTimer);
      await api?.close();
      // Leadership first, so another host takes the schedule over at once.
      await leader.stop();
      await follower.stop();
      installer.close();
      await agent.stop();
      await dns?.stop(options);
      await gateway.stop(options);
    },
  };
  return host;
}
