import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HostAgent } from './agent/agent.js';
import { buildApp } from './api/app.js';
import { buildDockerPluginApp } from './api/docker-plugin.js';
import { listenApi, listenOnSocket, planApiListen } from './api/listen.js';
import { assembleClusterHost, type HostDns, type HostLog } from './cluster-host.js';
import { DEFAULTS, MTU_MAX, MTU_MIN, type ClusterGatewayConfig } from './config/cluster.js';
import { loadOrCreateIdentity } from './config/identity.js';
import { nodeAeadProvider } from './crypto/aead-node.js';
import { bytesToHex } from './crypto/bytes.js';
import { IprouteDnsPlumbing } from './dns/plumbing.js';
import { RESOLVER_ADDRESS } from './dns/wire.js';
import { SocketEngine } from './docker/engine.js';
import { DockerPlugin } from './docker/plugin.js';
import { PLUGIN_SOCKET_FILE, RESERVATION_SWEEP_MS } from './docker/protocol.js';
import { DnsService } from './dns/service.js';
import { VeilError } from './errors.js';
import { claimDataDir, nativeFlock } from './host/data-dir.js';
import { commandRunnerChoice, execRunner, type CommandRunner } from './host/exec.js';
import { interfaceWithAddress, interfaceWithMac } from './host/netns.js';
import { HOST_LINK } from './host/names.js';
import { DEFAULT_SEQUENCE_BUDGET } from './keyrotation/budget.js';
import { scheduleConfig } from './keyrotation/schedule.js';
import type { Logger } from './log.js';
import { startEmbeddedEtcd, type EmbeddedEtcd } from './store/embedded-etcd.js';
import { CachedStore } from './store/cache.js';
import { EtcdStore } from './store/etcd.js';
import type { EndpointRecord, NetworkRecord, Store } from './store/types.js';
import { VERSION } from './model/version.js';
import type { DataPath } from './vxlan/datapath.js';
import type { Gateway } from './vxlan/gateway.js';
import { nativeAvailable } from './vxlan/native/addon.js';
import { NativeDataPath } from './vxlan/native/datapath.js';
import { IproutePlumbing } from './vxlan/plumbing.js';
import { DgramUnderlay, DgramVtep } from './vxlan/ts/dgram.js';
import { TsDataPath } from './vxlan/ts/datapath.js';

/*
 * Composition root of `veil gateway`: config → identity → plumbing and data path → store (embedded
 * etcd when there is no --cluster-store) → the host's control plane (cluster-host.ts) → API; stopped
 * in reverse. Wiring only.
 */

export interface RunningGateway {
  gateway: Gateway;
  agent?: HostAgent;
  stop(options?: { unplumb?: boolean }): Promise<void>;
}

/** The native batched data path by default (per-packet node:crypto cannot keep up, docs/architecture.md "Data paths"); the
 * TypeScript path when configured, or when the addon is not built here (logged: it is ~20x slower). */
export function chooseDataPath(
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
          peerNet: plumbing.peerNet,
          gatewayDevice: HOST_LINK,
          underlayMtu,
          relayPlain: plumbing.plainPath === 'gateway',
        })
      : new TsDataPath({
          vtepAddress: plumbing.vtepAddress,
          peerNet: plumbing.peerNet,
          underlay: new DgramUnderlay(underlayAddress),
          vtep: new DgramVtep(plumbing.hostAddress, plumbing.vtepAddress),
          provider: nodeAeadProvider,
          relayPlain: plumbing.plainPath === 'gateway',
        });
  return { dataPath, kind };
}

/**
 * The underlay MTU (docs/wire.md "MTU"): --mtu, else the MTU of the interface that holds the advertised
 * address, clamped into MTU_MIN..MTU_MAX; DEFAULTS.underlayMtu when no interface holds it (an address
 * that NAT maps to this host, say). `from` says which, for the log and GET /status.
 */
export async function underlayMtuFor(
  configured: number | undefined,
  advertise: string,
  run: CommandRunner,
  log: Pick<Logger, 'info' | 'warn'>,
): Promise<{ mtu: number; from: string }> {
  if (configured !== undefined) return { mtu: configured, from: '--mtu' };
  const link = await interfaceWithAddress(run, advertise).catch((err: unknown) => {
    log.warn({ error: (err as Error).message }, 'could not read the interfaces');
    return undefined;
  });
  if (!link) {
    log.warn(
      { advertise, mtu: DEFAULTS.underlayMtu },
      'no interface holds the advertised address; underlay MTU is the default (--mtu sets it)',
    );
    return { mtu: DEFAULTS.underlayMtu, from: 'default' };
  }
  const mtu = Math.min(MTU_MAX, Math.max(MTU_MIN, link.mtu));
  if (mtu !== link.mtu)
    log.warn(
      { interface: link.ifname, interfaceMtu: link.mtu, mtu },
      `underlay MTU clamped into ${MTU_MIN}..${MTU_MAX}`,
    );
  else log.info({ interface: link.ifname, mtu }, 'underlay MTU from the interface');
  return { mtu, from: link.ifname };
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

/** The Docker network and IPAM plugin "veil" on <pluginsDir>/veil.sock (docs/docker.md). */
async function serveDockerPlugin(
  docker: NonNullable<ClusterGatewayConfig['docker']>,
  store: Store,
  hostId: string,
  agent: HostAgent,
  dns: HostDns | undefined,
  log: HostLog,
): Promise<{ close(): Promise<void> }> {
  const plugin = new DockerPlugin({
    store,
    hostId,
    engine: new SocketEngine(docker.engineSocket),
    ports: {
      attach: (n, e) => agent.attachRuntimePort(n, e),
      detach: (n, id) => agent.detachRuntimePort(n, id),
      ...(dns ? { inContainer: (n: NetworkRecord, e: EndpointRecord) => dns.attached(e, n) } : {}),
      interfaceIn: (sandbox, mac) =>
        interfaceWithMac(execRunner, 'pid' in sandbox ? { pid: sandbox.pid } : { path: sandbox.netns }, mac),
    },
    log,
    resolverAddress: RESOLVER_ADDRESS,
  });
  const app = buildDockerPluginApp(plugin, { log });
  const path = join(docker.pluginsDir, PLUGIN_SOCKET_FILE);
  await listenOnSocket(app, path);
  log('info', 'docker plugin listening', { socket: path, docker: docker.engineSocket });
  const sweep = setInterval(() => {
    plugin
      .sweepReservations()
      .catch((err: unknown) => log('warn', 'docker reservation sweep failed', { error: (err as Error).message }));
  }, RESERVATION_SWEEP_MS);
  return {
    close: async () => {
      clearInterval(sweep);
      await app.close();
    },
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
  // One gateway per data directory; a predecessor it proves gone is replaced in etcd at once.
  const dataDir = claimDataDir(config.dataDir, nativeFlock());
  if (dataDir.predecessor !== undefined)
    log.info({ previous: dataDir.predecessor }, "this data directory's previous gateway is gone (its lock is free)");
  else log.info({ why: dataDir.why }, 'no previous gateway of this data directory to replace');
  dataDir.record(incarnation);
  const storeTls = config.clusterStoreTls ? readStoreTls(config.clusterStoreTls) : undefined;
  const runner = commandRunnerChoice();
  if (runner.kind === 'posix_spawn') log.info({ with: runner.kind }, 'host commands run');
  else
    log.warn(
      { with: runner.kind, reason: runner.reason },
      'host commands run with fork: each costs the gateway more CPU',
    );
  const underlay = await underlayMtuFor(config.underlayMtu, config.advertise, execRunner, log);
  const plumbing = new IproutePlumbing({
    vtepNetns: config.vtepNetns,
    underlayMtu: underlay.mtu,
    linkNet: config.linkNet,
    peerNet: config.peerNet,
    underlayAddress: config.advertise,
    plainPath: config.plainPath,
    log: (level, msg, fields) => log[level](fields ?? {}, msg),
  });
  const { dataPath, kind } = chooseDataPath(config.dataPath, config.advertise, plumbing, underlay.mtu, log);
  // No --cluster-store: this host runs its own etcd (one host; its data stays in the data dir).
  let embedded: EmbeddedEtcd | undefined;
  if (!config.clusterStore)
    embedded = await startEmbeddedEtcd({ dir: join(config.dataDir, 'etcd'), log: log.child({ component: 'etcd' }) });
  const store = new EtcdStore({
    endpoints: config.clusterStore ?? embedded!.endpoints,
    ...(storeTls ? { tls: storeTls } : {}),
  });
  const hostLog: HostLog = (level, event, fields) => log[level](fields ?? {}, event);
  const host = assembleClusterHost({
    store,
    plumbing,
    dataPath,
    vtep: config.vtep,
    hostId: config.hostId,
    address: config.advertise,
    os: config.os,
    identity,
    incarnation,
    ...(dataDir.predecessor !== undefined ? { predecessor: dataDir.predecessor } : {}),
    leaseTtlSeconds: config.leaseTtlSeconds,
    sequenceBudget: config.sequenceBudget ?? DEFAULT_SEQUENCE_BUDGET,
    underlayMtu: underlay,
    schedule: scheduleConfig({
      intervalMs: config.keyIntervalMs,
      ackTimeoutMs: config.keyGraceMs,
      graceMs: config.keyGraceMs,
      retiredLingerMs: config.keyGraceMs,
    }),
    log: hostLog,
    ...(config.cniSweepMs ? { runtimeSweepMs: config.cniSweepMs } : {}),
    // Embedded DNS: answers this host's containers at 169.254.53.53 from the agent's model (the etcd watch).
    dns: (model) =>
      new DnsService({
        hostId: config.hostId,
        model,
        plumbing: new IprouteDnsPlumbing({
          vtepNetns: config.vtepNetns,
          hostId: config.hostId,
          linkAddresses: [plumbing.hostAddress, plumbing.vtepAddress],
        }),
        vtepNetns: config.vtepNetns,
        log: hostLog,
      }),
    api: async (h) => {
      // The API reads networks, endpoints, hosts and epochs from a replica in memory (docs/api.md "Reads").
      const reads = new CachedStore(store);
      await reads.start();
      const deps = {
        gatewayStatus: () => h.gateway.status(),
        store: reads,
        keys: h.keys,
        local: {
          hostId: config.hostId,
          attach: (n: NetworkRecord, e: EndpointRecord) => h.agent.attachLocal(n, e),
          detach: (e: EndpointRecord) => h.agent.detachLocal(e),
        },
        version: VERSION,
        storeFigures: () => store.figures(),
      };
      const listening = await listenApi((server) => buildApp(deps, { logger: false, ...server }), apiPlan).catch(
        async (err: unknown) => {
          await reads.close();
          throw err;
        },
      );
      const api = {
        async close() {
          await listening.close();
          await reads.close();
        },
      };
      log.info({ addresses: listening.addresses }, 'API listening');
      if (!config.docker) return api;
      const docker = await serveDockerPlugin(config.docker, store, config.hostId, h.agent, h.dns, hostLog).catch(
        async (err: unknown) => {
          await api.close();
          throw err;
        },
      );
      return {
        async close() {
          await docker.close();
          await api.close();
        },
      };
    },
    exit: (code) => process.exit(code),
  });
  try {
    await host.start();
  } catch (err) {
    await store.close().catch(() => undefined);
    await embedded?.stop().catch(() => undefined);
    dataDir.release();
    throw err;
  }
  log.info(
    {
      host: config.hostId,
      index: host.self.index,
      address: config.advertise,
      dataPath: kind,
      // Per encrypted network, "network added" says where its frames met the data path, and why.
      vtep: dataPath.tapPort && config.vtep === 'tap' ? 'tap' : 'kernel',
      socket: config.apiSocket,
      incarnation,
    },
    'gateway ready',
  );
  return {
    gateway: host.gateway,
    agent: host.agent,
    async stop(options) {
      await host.stop(options);
      await store.close();
      await embedded?.stop();
      dataDir.release();
    },
  };
}
