import { VeilError } from '../errors.js';
import { SHARED_RANGE, parseKey } from '../store/layout.js';
import type {
  EndpointRecord,
  HostLease,
  RegisterOptions,
  HostRecord,
  HostRegistration,
  NetworkRecord,
  Store,
  WatchEvent,
  WatchHandle,
} from '../store/types.js';
import type { Gateway, GatewayPeer } from '../vxlan/gateway.js';
import { hexToBytes } from '../crypto/bytes.js';
import type { SecretKey } from '../crypto/secret.js';
import { sameReleaseLine } from '../model/version.js';
import { isWindows, optionEnabled, windowsHostWarning } from '../model/windows.js';

/*
 * The host agent: keeps this host registered in etcd under a lease, follows the
 * control plane through one watch on the whole prefix, and makes the gateway
 * match it: every network plumbed, every other live host a peer, this host's
 * containers attached, and every remote container's MAC pointed at its host's
 * gateway address (unicast, so only broadcasts are flooded).
 *
 * Events only update the model; one serial reconcile then applies the
 * difference between the model and what the gateway has, so a replayed or
 * resynced watch converges to the same state (docs/etcd.md "Watches").
 *
 * A peer whose host record went away (its lease expired) while its traffic keeps arriving is
 * cut off from etcd, not dead: the data plane proves what etcd cannot see. It stays a peer while
 * packets that open under its SAs keep coming (at least one every lease TTL) and goes one TTL after
 * they stop (docs/etcd.md "Leases"). Plain VXLAN does not count: anyone on the underlay can send it
 * from the peer's address. Its keys still come only from the schedule: a peer cut off through a
 * rotation gets no new epoch, so its traffic stops when the old one is retired, and then it goes.
 */

export interface AgentOptions {
  readonly store: Store;
  readonly gateway: Gateway;
  readonly self: HostRegistration;
  /** Seconds a dead host's record outlives it (its peers then remove it). */
  readonly leaseTtlSeconds?: number;
  /**
   * The incarnation of this host's previous gateway, proven gone (src/host/data-dir.ts): a record it
   * left is taken over at the first registration instead of waited out (docs/etcd.md "Leases").
   */
  readonly predecessor?: string;
  /** How often each peer's received packets are read (default PEER_TRAFFIC_SAMPLE_MS). */
  readonly trafficSampleMs?: number;
  readonly log?: (level: 'info' | 'warn' | 'error', event: string, fields?: Record<string, unknown>) => void;
  /** Called with the host index etcd allocated (once per host id, forever), before any peer is added. */
  readonly onIndex?: (index: number) => void;
  /** Called after a lost lease was replaced by a new one (acks bound to the old one are gone). */
  readonly onReregistered?: (lease: HostLease) => void;
  /** Called once a network is gone from etcd and from the gateway. */
  readonly onNetworkRemoved?: (networkId: string) => void;
  /** After a container of this host was plumbed (the embedded DNS configures it); a rejection fails that attach. */
  readonly onEndpointAttached?: (endpoint: EndpointRecord, network: NetworkRecord) => Promise<void>;
  /** After a container of this host was detached; `network` is undefined when the network went away (its bridge with it). Never rejects. */
  readonly onEndpointDetached?: (endpoint: EndpointRecord, network: NetworkRecord | undefined) => Promise<void>;
  /** Synchronously, each time the model took in changes (start, watch events, resync, local attach/detach). */
  readonly onModelChanged?: () => void;
}

export const DEFAULT_LEASE_TTL_SECONDS = 15;
/** How often the agent reads each peer's authenticated packets, to tell a cut-off peer from a dead one. */
export const PEER_TRAFFIC_SAMPLE_MS = 1_000;

export interface AgentStatus {
  host: string;
  registered: boolean;
  index?: number;
  watching: boolean;
  lastRevision: number;
  peers: string[];
  /** Peers whose host record is gone from etcd but whose traffic still arrives: kept (docs/etcd.md "Leases"). */
  cutOffPeers: string[];
  networks: number;
  localEndpoints: number;
  remoteMacs: number;
  attachFailures: Array<{ endpoint: string; network: string; error: string }>;
}

interface RemoteMac {
  vni: number;
  mac: string;
  hostId: string;
}

export class HostAgent {
  readonly #o: AgentOptions;
  #lease: HostLease | undefined;
  #watch: WatchHandle | undefined;
  #stopped = false;
  #connected = false;

  // The model, as etcd says.
  readonly #hosts = new Map<string, HostRecord>();
  readonly #networks = new Map<string, NetworkRecord>();
  readonly #endpoints = new Map<string, EndpointRecord>();

  // What the gateway has.
  readonly #appliedPeers = new Map<string, HostRecord>();
  readonly #appliedNetworks = new Map<string, NetworkRecord>();
  readonly #attached = new Map<string, EndpointRecord>();
  readonly #remoteMacs = new Map<string, RemoteMac>();
  readonly #attachFailures = new Map<string, { endpoint: EndpointRecord; error: string }>();

  #queue: Promise<void> = Promise.resolve();
  #retryTimer: NodeJS.Timeout | undefined;
  #retryDelay = 0;
  #pruned = false;
  readonly #refusedChanges = new Set<string>();
  /** Per applied peer: packets that opened under its SAs (all networks) at the last sample, and when that grew. */
  readonly #peerTraffic = new Map<string, { rx: number; grewAt: number }>();
  /** Applied peers kept although etcd no longer lists them, since when. */
  readonly #cutOff = new Map<string, number>();
  #trafficTimer: NodeJS.Timeout | undefined;

  constructor(options: AgentOptions) {
    this.#o = options;
  }

  get hostId(): string {
    return this.#o.self.id;
  }

  get lease(): HostLease | undefined {
    return this.#lease;
  }

  /**
   * Registers the host (refused for a Windows host while strict encrypted networks exist; warned
   * while any encrypted network exists), loads the state and starts following it. Returns the warning.
   */
  async start(): Promise<{ warning: string }> {
    const warning = await this.#checkWindows();
    await this.#registerWaitingForOldLease();
    const [hosts, networks, endpoints] = await Promise.all([
      this.#o.store.listHosts(),
      this.#o.store.listNetworks(),
      this.#o.store.listEndpoints(),
    ]);
    for (const h of hosts.items) this.#hosts.set(h.id, h);
    for (const n of networks.items) this.#networks.set(n.id, n);
    for (const e of endpoints.items) this.#endpoints.set(epKey(e.networkId, e.id), e);
    this.#o.onModelChanged?.();
    // Three reads at three revisions: watching from the oldest replays what the others already hold,
    // and every change applies idempotently, so the model converges.
    const from = Math.min(hosts.revision, networks.revision, endpoints.revision) + 1;
    await this.#reconcile();
    this.#watch = await this.#o.store.watch(SHARED_RANGE, from, {
      onEvents: (events) => this.#onEvents(events),
      onResync: (snapshot) => this.#onResync(snapshot),
      onDisconnected: (err) => {
        if (this.#connected)
          this.#log('warn', 'etcd watch disconnected; the data plane keeps its state', { error: err.message });
        this.#connected = false;
      },
      onReconnected: () => {
        this.#connected = true;
        this.#log('info', 'etcd watch attached again; changes made meanwhile follow');
      },
    });
    this.#connected = true;
    this.#trafficTimer = setInterval(
      () => this.#samplePeerTraffic(),
      this.#o.trafficSampleMs ?? PEER_TRAFFIC_SAMPLE_MS,
    );
    this.#trafficTimer.unref();
    this.#log('info', 'agent following the control plane', {
      host: this.hostId,
      fromRevision: from,
      hosts: this.#hosts.size,
      networks: this.#networks.size,
      endpoints: this.#endpoints.size,
    });
    return { warning };
  }

  /** Stops following and (unless `keepRegistration`) revokes the lease, so peers drop this host at once. */
  async stop(options: { keepRegistration?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#trafficTimer);
    await this.#watch?.cancel();
    await this.#queue;
    if (!options.keepRegistration)
      await this.#lease
        ?.revoke()
        .catch((err: Error) => this.#log('warn', 'could not revoke the host lease', { error: err.message }));
  }

  /** For the API: attaches a container of this host now and reports a plumbing failure to the caller. */
  attachLocal(network: NetworkRecord, endpoint: EndpointRecord): Promise<void> {
    return this.#serial(async () => {
      this.#networks.set(network.id, network);
      this.#endpoints.set(epKey(endpoint.networkId, endpoint.id), endpoint);
      this.#o.onModelChanged?.();
      await this.#ensureNetwork(network);
      await this.#attach(endpoint, network, { rethrow: true });
    });
  }

  /** For the API: detaches a container of this host now (the watch would do it a moment later). */
  detachLocal(endpoint: EndpointRecord): Promise<void> {
    return this.#serial(async () => {
      this.#endpoints.delete(epKey(endpoint.networkId, endpoint.id));
      this.#o.onModelChanged?.();
      await this.#reconcileNow();
    });
  }

  /**
   * For a runtime's network driver (Docker's Join): a port for a container of this host that the runtime
   * moves into the container itself. The endpoint stays record-only here: the runtime owns the interface.
   */
  attachRuntimePort(network: NetworkRecord, endpoint: EndpointRecord): Promise<string> {
    return this.#serial(async () => {
      this.#networks.set(network.id, network);
      await this.#ensureNetwork(network);
      return this.#o.gateway.attachHostPort(network.vni, endpoint.id, endpoint.mac, endpoint.ipv4);
    });
  }

  /** The runtime's port goes (Docker's Leave). */
  detachRuntimePort(network: NetworkRecord, endpointId: string): Promise<void> {
    return this.#serial(() => this.#o.gateway.detachEndpoint(network.vni, endpointId));
  }

  /**
   * The key installer's sink (keyrotation/installer.ts EpochSink): epochs reach the gateway in the
   * agent's order, after their network. The gateway keeps its own copy; the one handed over is wiped.
   */
  readonly epochs = {
    installEpoch: (networkId: string, epoch: number, secret: SecretKey): Promise<void> =>
      this.#serial(async () => {
        try {
          const net = await this.#networkFor(networkId);
          await this.#o.gateway.installEpoch(net.vni, epoch, secret);
        } finally {
          secret.wipe();
        }
      }),
    activateEpoch: (networkId: string, epoch: number): Promise<void> =>
      this.#serial(async () => {
        const net = await this.#networkFor(networkId);
        await this.#o.gateway.activateEpoch(net.vni, epoch);
      }),
    retireEpoch: (networkId: string, epoch: number): Promise<void> =>
      this.#serial(async () => {
        const net = this.#appliedNetworks.get(networkId);
        if (net) await this.#o.gateway.retireEpoch(net.vni, epoch);
      }),
  };

  async #networkFor(networkId: string): Promise<NetworkRecord> {
    const known = this.#appliedNetworks.get(networkId);
    if (known) return known;
    // The key watch can run ahead of ours: fetch the network and plumb it first.
    const network = this.#networks.get(networkId) ?? (await this.#o.store.getNetwork(networkId));
    this.#networks.set(network.id, network);
    await this.#ensureNetwork(network);
    return network;
  }

  /** Waits until everything received so far is applied. */
  settled(): Promise<void> {
    return this.#serial(async () => undefined);
  }

  networks(): NetworkRecord[] {
    return [...this.#networks.values()];
  }

  /** Every endpoint of every host, as etcd says (the embedded DNS answers from these). */
  endpoints(): EndpointRecord[] {
    return [...this.#endpoints.values()];
  }

  hosts(): HostRecord[] {
    return [...this.#hosts.values()];
  }

  status(): AgentStatus {
    return {
      host: this.hostId,
      registered: this.#lease !== undefined && !this.#lease.lost.aborted,
      ...(this.#lease ? { index: this.#lease.index } : {}),
      watching: this.#connected,
      lastRevision: this.#watch?.lastRevision ?? 0,
      peers: [...this.#appliedPeers.keys()].sort(),
      cutOffPeers: [...this.#cutOff.keys()].sort(),
      networks: this.#appliedNetworks.size,
      localEndpoints: this.#attached.size,
      remoteMacs: this.#remoteMacs.size,
      attachFailures: [...this.#attachFailures.values()].map((f) => ({
        endpoint: f.endpoint.name,
        network: f.endpoint.networkId,
        error: f.error,
      })),
    };
  }

  // ---- registration ----

  async #checkWindows(): Promise<string> {
    if (this.#o.self.os.toLowerCase() !== 'windows') return '';
    const encrypted = (await this.#o.store.listNetworks()).items.filter((n) => n.encrypted);
    if (encrypted.length === 0) return '';
    const strict = encrypted.filter((n) => optionEnabled(n.options, 'strict'));
    if (strict.length > 0) {
      throw new VeilError(
        'VEIL_ERR_STRICT_UNENCRYPTED_HOST',
        `Windows host ${this.hostId} cannot join: strict encrypted network(s) ${strict
          .map((n) => n.name)
          .sort()
          .join(', ')}`,
      );
    }
    const warning = windowsHostWarning(
      [this.hostId],
      encrypted.map((n) => n.name),
    );
    this.#log('warn', 'Windows host registering while encrypted networks exist', { host: this.hostId, warning });
    return warning;
  }

  async #register(options: RegisterOptions = {}): Promise<void> {
    const ttl = this.#o.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    const lease = await this.#o.store.registerHost(this.#o.self, ttl, options);
    this.#lease = lease;
    if (lease.replaced)
      this.#log('info', "host id held by this host's previous gateway, which is gone: its record replaced", {
        host: lease.hostId,
        previous: options.replaces,
      });
    this.#o.onIndex?.(lease.index);
    this.#log('info', 'host registered', {
      host: lease.hostId,
      index: lease.index,
      address: this.#o.self.address,
      ttlSeconds: ttl,
    });
    lease.lost.addEventListener(
      'abort',
      () => {
        if (this.#stopped) return;
        // The record is gone (etcd unreachable past the TTL, or revoked): peers dropped us. Register anew.
        this.#log('warn', 'host lease lost; registering again', { host: lease.hostId });
        void this.#reregister();
      },
      { once: true },
    );
  }

  /**
   * The store refuses a host id a live lease holds (a cloned machine must not take over a host).
   * After a crash, this host's own old record lives until its lease expires: it is replaced at once
   * when the data directory proves its process gone (`predecessor`), else waited out, once.
   */
  async #registerWaitingForOldLease(): Promise<void> {
    const ttl = this.#o.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    const deadline = Date.now() + (ttl + 3) * 1000;
    const options: RegisterOptions = this.#o.predecessor !== undefined ? { replaces: this.#o.predecessor } : {};
    for (;;) {
      try {
        return await this.#register(options);
      } catch (err) {
        if ((err as { code?: string }).code !== 'VEIL_ERR_HOST_ID_IN_USE' || Date.now() > deadline) throw err;
        this.#log(
          'warn',
          'host id held by a live lease (this host before a crash, or another machine); waiting for it to expire',
          { host: this.hostId, ttlSeconds: ttl },
        );
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  async #reregister(): Promise<void> {
    for (let delay = 500; !this.#stopped; delay = Math.min(delay * 2, 10_000)) {
      try {
        await this.#register();
        if (this.#stopped) {
          // stop() ran meanwhile: this lease must not keep the host listed.
          await this.#lease?.revoke().catch(() => undefined);
          return;
        }
        this.#o.onReregistered?.(this.#lease!);
        return;
      } catch (err) {
        this.#log('warn', 'registration failed; retrying', { error: (err as Error).message, retryMs: delay });
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  // ---- the model ----

  #onEvents(events: WatchEvent[]): void {
    for (const e of events) this.#apply(e.type, e.key, e.value);
    this.#o.onModelChanged?.();
    this.#schedule();
  }

  #onResync(snapshot: Array<{ key: string; value: unknown }>): void {
    this.#log('warn', 'etcd compacted past our watch; reloading the whole state', {});
    this.#hosts.clear();
    this.#networks.clear();
    this.#endpoints.clear();
    for (const { key, value } of snapshot) this.#apply('put', key, value);
    this.#o.onModelChanged?.();
    this.#schedule();
  }

  #apply(type: 'put' | 'delete', key: string, value: unknown): void {
    const k = parseKey(key);
    if (!k) return;
    switch (k.kind) {
      case 'host':
        if (type === 'put') this.#hosts.set(k.hostId, value as HostRecord);
        else this.#hosts.delete(k.hostId);
        break;
      case 'network':
        if (type === 'put') this.#networks.set(k.networkId, value as NetworkRecord);
        else this.#networks.delete(k.networkId);
        break;
      case 'endpoint':
        if (type === 'put') this.#endpoints.set(epKey(k.networkId, k.endpointId), value as EndpointRecord);
        else this.#endpoints.delete(epKey(k.networkId, k.endpointId));
        break;
      default:
        break;
    }
  }

  // ---- reconcile: make the gateway match the model ----

  #schedule(): void {
    void this.#serial(() => this.#reconcileNow());
  }

  #reconcile(): Promise<void> {
    return this.#serial(() => this.#reconcileNow());
  }

  #serial<T>(job: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(job);
    // One failed step must not stop the agent: it is logged, and the next event reconciles again.
    this.#queue = run.then(
      () => undefined,
      (err: Error) => this.#log('error', 'reconcile step failed', { error: err.message }),
    );
    return run;
  }

  async #reconcileNow(): Promise<void> {
    const gw = this.#o.gateway;
    const failed: string[] = [];
    // Each item stands alone: one that fails (logged) does not hold back the others, and a timer retries it.
    const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        failed.push(what);
        this.#log('warn', 'reconcile step failed; will retry', { step: what, error: (err as Error).message });
      }
    };

    // Networks first: peers, epochs and containers hang off them.
    for (const [id, applied] of this.#appliedNetworks) {
      const want = this.#networks.get(id);
      if (want) {
        // vni, index and encryption are fixed at creation (the API has no update): a record that changes
        // them was not written by veil; refuse it rather than turn an encrypted network plain.
        if (want.vni !== applied.vni || want.encrypted !== applied.encrypted || want.index !== applied.index) {
          if (!this.#refusedChanges.has(id))
            this.#log('error', 'network record changed vni, index or encryption in etcd; ignoring the change', {
              network: applied.name,
            });
          this.#refusedChanges.add(id);
        }
        continue;
      }
      await step(`remove network ${applied.name}`, async () => {
        for (const [key, ep] of this.#attached) {
          if (ep.networkId !== id) continue;
          this.#attached.delete(key);
          await this.#o.onEndpointDetached?.(ep, undefined);
        }
        for (const [key, m] of this.#remoteMacs) if (m.vni === applied.vni) this.#remoteMacs.delete(key);
        await gw.removeNetwork(applied.vni);
        this.#appliedNetworks.delete(id);
        this.#o.onNetworkRemoved?.(id);
      });
    }
    for (const network of this.#networks.values())
      await step(`network ${network.name}`, () => this.#ensureNetwork(network));

    // Peers: every other live host, and those cut off from etcd whose traffic still arrives.
    for (const [id] of this.#appliedPeers) {
      if (this.#hosts.has(id) && id !== this.hostId) {
        if (this.#cutOff.delete(id)) this.#log('info', 'peer registered again', { peer: id });
        continue;
      }
      if (id !== this.hostId && this.#trafficArrives(id)) {
        if (!this.#cutOff.has(id)) {
          this.#cutOff.set(id, Date.now());
          this.#log('warn', "peer's host record is gone but its traffic still arrives; keeping it", { peer: id });
        }
        continue;
      }
      await step(`remove peer ${id}`, async () => {
        await gw.removePeer(id);
        this.#appliedPeers.delete(id);
        this.#peerTraffic.delete(id);
        const since = this.#cutOff.get(id);
        if (this.#cutOff.delete(id))
          this.#log('info', 'cut-off peer went silent; removed', { peer: id, keptMs: Date.now() - since! });
        // The gateway removed every FDB entry pointing at that peer.
        for (const [key, m] of this.#remoteMacs) if (m.hostId === id) this.#remoteMacs.delete(key);
      });
    }
    for (const host of this.#hosts.values()) {
      if (host.id === this.hostId) continue;
      const applied = this.#appliedPeers.get(host.id);
      if (applied && samePeer(applied, host)) continue;
      await step(`peer ${host.id}`, async () => {
        if (applied) for (const [key, m] of this.#remoteMacs) if (m.hostId === host.id) this.#remoteMacs.delete(key);
        this.#appliedPeers.delete(host.id);
        await gw.addPeer(toPeer(host));
        this.#appliedPeers.set(host.id, host);
        if (!applied && !sameReleaseLine(host.version, this.#o.self.version))
          this.#log('warn', 'peer runs another veil release; encrypted traffic with it may not open', {
            peer: host.id,
            peerVersion: host.version,
            version: this.#o.self.version,
            see: 'docs/operations.md "Upgrading"',
          });
      });
    }

    // Containers: detach what went away, attach this host's, point remote MACs at their hosts.
    for (const [key, ep] of this.#attached) {
      if (this.#endpoints.has(key)) continue;
      await step(`detach ${ep.name}`, async () => {
        const net = this.#appliedNetworks.get(ep.networkId);
        if (net) await gw.detachEndpoint(net.vni, ep.id);
        this.#attached.delete(key);
        await this.#o.onEndpointDetached?.(ep, net);
      });
    }
    for (const [key, m] of this.#remoteMacs) {
      const ep = this.#endpoints.get(key);
      if (ep && ep.hostId === m.hostId && ep.mac === m.mac && this.#appliedPeers.has(ep.hostId)) continue;
      await step(`remove MAC ${m.mac}`, async () => {
        await gw.removeRemoteMac(m.vni, m.mac);
        this.#remoteMacs.delete(key);
      });
    }
    for (const key of this.#attachFailures.keys()) if (!this.#endpoints.has(key)) this.#attachFailures.delete(key);
    for (const [key, ep] of this.#endpoints) {
      const net = this.#appliedNetworks.get(ep.networkId);
      if (!net) continue;
      if (ep.hostId === this.hostId) {
        if (!this.#attached.has(key) && !this.#attachFailures.has(key)) await this.#attach(ep, net, { rethrow: false });
      } else if (this.#appliedPeers.has(ep.hostId) && !this.#remoteMacs.has(key)) {
        await step(`MAC ${ep.mac}`, async () => {
          await gw.addRemoteMac(net.vni, ep.hostId, ep.mac);
          this.#remoteMacs.set(key, { vni: net.vni, mac: ep.mac, hostId: ep.hostId });
        });
      }
    }
    if (!this.#pruned && failed.length === 0) {
      // Once, when the first full pass succeeded: FDB entries a previous run left toward ports no peer holds.
      await step('prune stale FDB entries', async () => {
        await gw.pruneStaleFdb();
        this.#pruned = true;
      });
    }
    this.#scheduleRetry(failed.length > 0);
  }

  /** Packets from this peer arrived within the last lease TTL (as of the last sample). */
  #trafficArrives(peerId: string): boolean {
    const seen = this.#peerTraffic.get(peerId);
    const ttlMs = (this.#o.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS) * 1000;
    return seen !== undefined && seen.grewAt > 0 && Date.now() - seen.grewAt < ttlMs;
  }

  /** Reads what each peer sent us that authenticated; a cut-off peer that went quiet is then removed by a reconcile. */
  #samplePeerTraffic(): void {
    const rx = new Map<string, number>();
    for (const p of this.#o.gateway.status().pairs) {
      const opened = p.inbound.reduce((n, sa) => n + sa.opened, 0);
      rx.set(p.peer, (rx.get(p.peer) ?? 0) + opened);
    }
    const now = Date.now();
    for (const id of this.#appliedPeers.keys()) {
      const total = rx.get(id) ?? 0;
      const seen = this.#peerTraffic.get(id);
      if (!seen) this.#peerTraffic.set(id, { rx: total, grewAt: 0 });
      else if (total > seen.rx) this.#peerTraffic.set(id, { rx: total, grewAt: now });
      else if (total < seen.rx) this.#peerTraffic.set(id, { rx: total, grewAt: seen.grewAt }); // re-added: counters restarted
    }
    for (const id of this.#peerTraffic.keys()) if (!this.#appliedPeers.has(id)) this.#peerTraffic.delete(id);
    if ([...this.#cutOff.keys()].some((id) => !this.#trafficArrives(id))) this.#schedule();
  }

  #scheduleRetry(needed: boolean): void {
    if (!needed) {
      this.#retryDelay = 0;
      return;
    }
    if (this.#retryTimer || this.#stopped) return;
    this.#retryDelay = Math.min(Math.max(this.#retryDelay * 2, 1000), 30_000);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#schedule();
    }, this.#retryDelay);
    this.#retryTimer.unref();
  }

  async #ensureNetwork(network: NetworkRecord): Promise<void> {
    if (this.#appliedNetworks.has(network.id)) return;
    await this.#o.gateway.addNetwork({
      id: network.id,
      index: network.index,
      vni: network.vni,
      encrypted: network.encrypted,
    });
    this.#appliedNetworks.set(network.id, network);
  }

  async #attach(ep: EndpointRecord, net: NetworkRecord, opts: { rethrow: boolean }): Promise<void> {
    const key = epKey(ep.networkId, ep.id);
    if (this.#attached.has(key)) return;
    if (!ep.sandbox) return; // a record-only endpoint: nothing to plumb here
    const prefix = net.ipam.subnet.split('/')[1]!;
    try {
      await this.#o.gateway.attachEndpoint({
        vni: net.vni,
        endpointId: ep.id,
        netns: 'netns' in ep.sandbox ? { path: ep.sandbox.netns } : { pid: ep.sandbox.pid },
        mac: ep.mac,
        // No default route: the overlay is one L2 segment; the container keeps its own way out (Docker's gwbridge).
        ipv4: `${ep.ipv4}/${prefix}`,
        ...(ep.ifName ? { ifName: ep.ifName } : {}),
      });
      this.#attached.set(key, ep);
      this.#attachFailures.delete(key);
      await this.#o.onEndpointAttached?.(ep, net);
    } catch (err) {
      const error = (err as Error).message;
      if (opts.rethrow)
        throw new VeilError('VEIL_ERR_ATTACH_FAILED', `${ep.name} on ${net.name}: ${error}`, { cause: err });
      // A container of ours that cannot be plumbed (its namespace is gone): say so once, do not retry in a loop.
      this.#attachFailures.set(key, { endpoint: ep, error });
      this.#log('warn', 'cannot attach a local container', { endpoint: ep.name, network: net.name, error });
    }
  }

  #log(level: 'info' | 'warn' | 'error', event: string, fields?: Record<string, unknown>): void {
    this.#o.log?.(level, event, fields);
  }
}

const epKey = (networkId: string, endpointId: string) => `${networkId}/${endpointId}`;

function toPeer(h: HostRecord): GatewayPeer {
  return {
    id: h.id,
    index: h.index,
    address: h.address,
    publicKey: hexToBytes(h.publicKey),
    incarnation: h.incarnation,
    encrypts: !isWindows(h),
  };
}

function samePeer(a: HostRecord, b: HostRecord): boolean {
  return (
    a.index === b.index &&
    a.address === b.address &&
    a.publicKey === b.publicKey &&
    a.incarnation === b.incarnation &&
    a.os === b.os
  );
}
