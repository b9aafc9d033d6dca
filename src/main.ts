import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startEmbeddedEtcd, type EmbeddedEtcd } from './store/embedded-etcd.js';
import { listenApi, planApiListen, type ListeningApi } from './api/listen.js';
import type { EndpointRecord, NetworkRecord } from './store/types.js';
import { HostAgent } from './agent/agent.js';
import type { ClusterGatewayConfig } from './config/cluster.js';
import { bytesToHex } from './crypto/bytes.js';
import { loadOrCreateIdentity } from './config/identity.js';
import { EpochFollower } from './keyrotation/follower.js';
import { EpochInstaller } from './keyrotation/installer.js';
import { KeyScheduleLeader } from './keyrotation/leader.js';
import { requestRotation, storeRotationRequests } from './keyrotation/requests.js';
import { DEFAULT_SEQUENCE_BUDGET, rotationsDue } from './keyrotation/budget.js';
import { scheduleConfig } from './keyrotation/schedule.js';
import { EtcdStore } from './store/etcd.js';
import { keys } from './store/layout.js';
import { isWindows } from './model/windows.js';
import { VERSION } from './version.js';
import { dirname } from 'node:path';
import { buildApp } from './api/app.js';
import { nodeAeadProvider } from './crypto/aead-node.js';
import type { Logger } from './log.js';
import type { StaticGatewayConfig } from './config/static.js';
import { TsDataPath } from './vxlan/ts/datapath.js';
import { Gateway } from './vxlan/gateway.js';
import type { DataPath } from './vxlan/datapath.js';
import { DgramUnderlay, DgramVtep } from './vxlan/ts/dgram.js';
import { NativeDataPath } from './vxlan/native/datapath.js';
import { nativeAvailable } from './vxlan/native/addon.js';
import { VeilError } from './errors.js';
import { IproutePlumbing } from './vxlan/plumbing.js';
import { IprouteDnsPlumbing } from './dns/plumbing.js';
import { DnsService } from './dns/service.js';

/*
 * Composition root: config → plumbing → data path → gateway → store → agent, DNS and key
 * schedule → API; stopped in reverse.
 */

export interface RunningGateway {
  gateway: Gateway;
  agent?: HostAgent;
  stop(options?: { unplumb?: boolean }): Promise<void>;
}

/** The native batched data path by default (per-packet node:crypto cannot keep up, docs/architecture.md "Data paths"); the
 * TypeScript path when configured, or when the addon is not built here (logged: it is ~20x slower). */
function chooseDataPath(
  configured: 'ts' | 'native' | undefined,
  underlayAddress: string,
  plumbing: IproutePlumbing,
  underlayMtu: number,
  log: Logger,
): { dataPath: DataPath; kind: 'ts' | 'native' } {
  let kind = configured ?? 'native';
  if (kind === 'native' && !nativeAvailable()) {
    if (configured === 'native')
      throw new VeilError(
        'VEIL_ERR_CONFIG_INVALID',
        'dataPath "native" but the native addon is not built (npm run build:native)',
      );
    log.warn('native data path not built; falling back to the TypeScript data path');
    kind = 'ts';
  }
  const dataPath: DataPath =
    kind === 'native'
      ? new NativeDataPath({
          underlayAddress,
          hostAddress: plumbing.hostAddress,
          vtepAddress: plumbing.vtepAddress,
          underlayMtu,
        })
      : new TsDataPath({
          vtepAddress: plumbing.vtepAddress,
          underlay: new DgramUnderlay(underlayAddress),
          vtep: new DgramVtep(plumbing.hostAddress, plumbing.vtepAddress),
          provider: nodeAeadProvider,
        });
  return { dataPath, kind };
}

export async function startStaticGateway(config: StaticGatewayConfig, log: Logger): Promise<RunningGateway> {
  const plumbing = new IproutePlumbing({
    vtepNetns: config.vtep.netns,
    underlayMtu: config.underlayMtu,
    ...(config.vtep.linkNet ? { linkNet: config.vtep.linkNet } : {}),
    log: (level, msg, fields) => log[level](fields ?? {}, msg),
  });
  const { dataPath, kind } = chooseDataPath(config.dataPath, config.host.address, plumbing, config.underlayMtu, log);
  const gateway = new Gateway({
    self: {
      id: config.host.id,
      index: config.host.index,
      address: config.host.address,
      publicKey: new Uint8Array(0),
      incarnation: config.host.incarnation,
    },
    privateKey: config.host.privateKey,
    plumbing,
    dataPath,
    ...(config.sequenceBudget ? { sequenceBudget: config.sequenceBudget } : {}),
    log: (msg, fields) => log.info(fields ?? {}, msg),
  });
  await gateway.start();
  for (const network of config.networks) await gateway.addNetwork(network, network.key);
  for (const peer of config.peers) await gateway.addPeer(peer);

  const app = buildApp({ gatewayStatus: () => gateway.status() });
  if (config.apiSocket) {
    mkdirSync(dirname(config.apiSocket), { recursive: true });
    rmSync(config.apiSocket, { force: true });
    await app.listen({ path: config.apiSocket });
    log.info({ socket: config.apiSocket }, 'API listening');
  }
  log.info(
    { host: config.host.id, dataPath: kind, peers: config.peers.length, networks: config.networks.length },
    'gateway ready',
  );
  return {
    gateway,
    async stop(options) {
      await app.close();
      await gateway.stop(options);
    },
  };
}

/** The etcd client's TLS files (--cluster-store-opt), read once at start. */
function readStoreTls(files: { ca?: string; cert?: string; key?: string }): {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
} {
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new VeilError('VEIL_ERR_CONFIG_INVALID', `--cluster-store-opt ${what}=${path}: ${(err as Error).message}`);
    }
  };
  return {
    ...(files.ca ? { ca: read('kv.cacertfile', files.ca) } : {}),
    ...(files.cert ? { cert: read('kv.certfile', files.cert) } : {}),
    ...(files.key ? { key: read('kv.keyfile', files.key) } : {}),
  };
}

/**
 * Cluster mode: the control plane in etcd drives this host's gateway (hosts,
 * networks, containers, and the key schedule), and the API serves on a unix socket.
 */
export async function startClusterGateway(config: ClusterGatewayConfig, log: Logger): Promise<RunningGateway> {
  // Refuse a bad listen configuration (non-loopback without TLS) before anything is set up.
  const apiPlan = planApiListen({
    socket: config.apiSocket,
    ...(config.apiListen ? { listen: config.apiListen } : {}),
    ...(config.apiTls ? { tls: config.apiTls } : {}),
  });
  const identity = loadOrCreateIdentity(config.dataDir);
  log.info({ dataDir: config.dataDir, created: identity.created }, 'host identity loaded');
  const incarnation = bytesToHex(randomBytes(8));
  const storeTls = config.clusterStoreTls ? readStoreTls(config.clusterStoreTls) : undefined;
  const plumbing = new IproutePlumbing({
    vtepNetns: config.vtepNetns,
    underlayMtu: config.underlayMtu,
    linkNet: config.linkNet,
    log: (level, msg, fields) => log[level](fields ?? {}, msg),
  });
  const { dataPath, kind } = chooseDataPath(config.dataPath, config.advertise, plumbing, config.underlayMtu, log);
  // No --cluster-store: this host runs its own etcd (one host; its data stays in the data dir).
  let embedded: EmbeddedEtcd | undefined;
  if (!config.clusterStore)
    embedded = await startEmbeddedEtcd({ dir: join(config.dataDir, 'etcd'), log: log.child({ component: 'etcd' }) });
  const store = new EtcdStore({
    endpoints: config.clusterStore ?? embedded!.endpoints,
    ...(storeTls ? { tls: storeTls } : {}),
  });
  // The index is allocated at registration; the gateway learns it from the agent before any SA exists.
  const self = { id: config.hostId, index: 0, address: config.advertise, publicKey: identity.publicKey, incarnation };
  const sequenceBudget = config.sequenceBudget ?? DEFAULT_SEQUENCE_BUDGET;
  const gateway = new Gateway({
    self,
    privateKey: identity.privateKey,
    plumbing,
    dataPath,
    sequenceBudget,
    log: (msg, fields) => log.info(fields ?? {}, msg),
  });
  const scheduleCfg = scheduleConfig({
    intervalMs: config.keyIntervalMs,
    ackTimeoutMs: config.keyGraceMs,
    graceMs: config.keyGraceMs,
    retiredLingerMs: config.keyGraceMs,
  });
  const keyLog = (event: string, fields?: Record<string, unknown>) => log.info(fields ?? {}, event);
  const identityForKeys = { hostId: config.hostId, privateKey: identity.privateKey };
  // The DNS service and the installer reach the agent, which is made after them.
  let agentRef: HostAgent | undefined;
  // Embedded DNS: answers this host's containers at 169.254.53.53 from the agent's model (the etcd watch).
  const dns = new DnsService({
    hostId: config.hostId,
    model: { networks: () => agentRef?.networks() ?? [], endpoints: () => agentRef?.endpoints() ?? [] },
    plumbing: new IprouteDnsPlumbing({
      vtepNetns: config.vtepNetns,
      hostId: config.hostId,
      linkAddresses: [plumbing.hostAddress, plumbing.vtepAddress],
    }),
    vtepNetns: config.vtepNetns,
    log: (level, msg, fields) => log[level](fields ?? {}, msg),
  });
  const installer = new EpochInstaller({
    self: identityForKeys,
    sink: {
      installEpoch: (n, e, s) => agentRef!.epochs.installEpoch(n, e, s),
      activateEpoch: (n, e) => agentRef!.epochs.activateEpoch(n, e),
      retireEpoch: (n, e) => agentRef!.epochs.retireEpoch(n, e),
    },
    // Bound to the host's lease: an ack disappears with the host. The incarnation is the registered one.
    ack: (networkId, epoch) =>
      store.ack(agentRef!.lease!, { networkId, epoch, hostId: config.hostId, incarnation, installedAt: Date.now() }),
    log: keyLog,
    config: scheduleCfg,
  });
  const follower = new EpochFollower({ store, installer, log: keyLog });
  const requests = storeRotationRequests(store, keys.rotatePrefix());
  // The election lease lives as long as a host lease: a dead leader is replaced as fast as a dead host is dropped.
  const leader = new KeyScheduleLeader({
    store,
    requests,
    self: identityForKeys,
    config: scheduleCfg,
    log: keyLog,
    electionTtlSeconds: config.leaseTtlSeconds,
  });
  const agent = new HostAgent({
    store,
    gateway,
    self: {
      id: config.hostId,
      address: config.advertise,
      os: config.os,
      arch: process.arch,
      version: VERSION,
      publicKey: bytesToHex(identity.publicKey),
      incarnation,
    },
    leaseTtlSeconds: config.leaseTtlSeconds,
    log: (level, msg, fields) => log[level](fields ?? {}, msg),
    onIndex: (index) => {
      // The SPI carries the index but the key does not: the same key under a new SPI would restart its
      // sequence at 1 (GCM nonce reuse). An index can only change if etcd lost its data; restart instead.
      if (self.index !== 0 && self.index !== index) {
        log.fatal(
          { was: self.index, now: index },
          'host index changed under a running gateway (etcd restored?); exiting so a restart gets a new incarnation and new keys',
        );
        process.exit(70);
      }
      self.index = index;
    },
    onReregistered: () => void installer.resetAcks(),
    onNetworkRemoved: (networkId) => void installer.removeNetwork(networkId),
    onEndpointAttached: (endpoint, network) => dns.attached(endpoint, network),
    onEndpointDetached: (endpoint, network) => dns.detached(endpoint, network),
    onModelChanged: () => dns.invalidate(),
  });
  agentRef = agent;
  let api: ListeningApi | undefined;
  try {
    await gateway.start();
    await dns.start();
    const { warning } = await agent.start();
    if (warning) log.warn({ warning }, 'Windows host');
    await follower.start();
    // A Windows host is no member of encrypted networks (it cannot encrypt), so it could never rewrap: it never leads.
    if (!isWindows({ os: config.os })) leader.start();
    const deps = {
      gatewayStatus: () => gateway.status(),
      store,
      keys: {
        requestRotation: (idOrName: string, by: string) => requestRotation({ store, requests }, idOrName, by),
        status: () => ({ installer: installer.status(), leader: leader.status(), config: scheduleCfg }),
      },
      local: {
        hostId: config.hostId,
        attach: (n: NetworkRecord, e: EndpointRecord) => agent.attachLocal(n, e),
        detach: (e: EndpointRecord) => agent.detachLocal(e),
      },
      version: VERSION,
    };
    api = await listenApi((server) => buildApp(deps, { logger: false, ...server }), apiPlan);
    log.info({ addresses: api.addresses }, 'API listening');
  } catch (err) {
    await api?.close().catch(() => undefined);
    await leader.stop().catch(() => undefined);
    await follower.stop().catch(() => undefined);
    await agent.stop().catch(() => undefined);
    await dns.stop({ unplumb: true }).catch(() => undefined);
    await gateway.stop({ unplumb: true }).catch(() => undefined);
    await store.close().catch(() => undefined);
    await embedded?.stop().catch(() => undefined);
    throw err;
  }
  // Rotation on a packet budget: local counters, read once a second (no etcd traffic unless a rotation is due).
  const asked = new Set<string>();
  const budgetTimer = setInterval(() => {
    for (const due of rotationsDue(gateway.status().pairs, sequenceBudget, asked)) {
      asked.add(`${due.vni}/${due.epoch}`);
      const network = agent.networks().find((n) => n.vni === due.vni);
      if (!network) continue;
      log.info(
        { network: network.name, epoch: due.epoch, peer: due.peer, sealed: due.sealed, budget: sequenceBudget },
        'outbound SA used half its sequence budget; asking for a rotation',
      );
      requestRotation({ store, requests }, network.id, `sequence-budget:${config.hostId}`).catch((err: Error) => {
        asked.delete(`${due.vni}/${due.epoch}`);
        log.warn({ network: network.name, error: err.message }, 'could not ask for a rotation; will retry');
      });
    }
  }, 1000);
  budgetTimer.unref();
  log.info(
    {
      host: config.hostId,
      index: self.index,
      address: config.advertise,
      dataPath: kind,
      socket: config.apiSocket,
      incarnation,
    },
    'gateway ready',
  );
  return {
    gateway,
    agent,
    async stop(options) {
      clearInterval(budgetTimer);
      await api?.close();
      // Leadership first, so another host takes the schedule over at once.
      await leader.stop();
      await follower.stop();
      installer.close();
      await agent.stop();
      await dns.stop(options);
      await gateway.stop(options);
      await store.close();
      await embedded?.stop();
    },
  };
}
