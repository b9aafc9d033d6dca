// The in-process cluster (docs/testing.md "In-process cluster"): N hosts in one process, each the
// control plane `veil gateway` runs (assembleClusterHost) around a TsDataPath with real AES-GCM, all
// on one in-memory store. The fakes sit at the I/O seams only: MemoryWire for the underlay, a
// MemoryVtep per host for its kernel VXLAN device, RecordingPlumbing for ip/nft, MemoryBackend for etcd.
import { randomBytes } from 'node:crypto';
import { afterEach, onTestFailed } from 'vitest';
import { nodeAeadProvider } from '../../src/crypto/aead-node.js';
import { bytesToHex, readU32 } from '../../src/crypto/bytes.js';
import { generateX25519KeyPair, type X25519KeyPair } from '../../src/crypto/x25519.js';
import { DEFAULT_SEQUENCE_BUDGET } from '../../src/keyrotation/budget.js';
import { currentEpoch, scheduleConfig, type ScheduleConfig } from '../../src/keyrotation/schedule.js';
import type { Clock } from '../../src/keyrotation/seams.js';
import { assembleClusterHost, type ClusterHost } from '../../src/cluster-host.js';
import { keys } from '../../src/store/layout.js';
import { MemoryBackend, type MemoryStore } from '../../src/store/memory.js';
import type { KeyEpochRecord, NetworkRecord } from '../../src/store/types.js';
import { RecordingPlumbing } from '../../src/vxlan/plumbing-fake.js';
import { TsDataPath } from '../../src/vxlan/ts/datapath.js';
import { MemoryVtep, MemoryWire, type Delivery, type WireDatagram } from '../../src/vxlan/ts/io-memory.js';
import { ESP_IN_UDP_PORT, ESP_IV_LENGTH, ESP_IV_OFFSET, VXLAN_PORT } from '../../src/vxlan/wire/constants.js';
import type { DropReason } from '../../src/vxlan/wire/drops.js';
import { encodeVxlanHeader, parseVxlanHeader } from '../../src/vxlan/wire/vxlan.js';
import { udpFrame } from '../support/frames.js';
import { waitUntil } from '../support/wait.js';

/**
 * The key schedule of the cluster. Nothing happens on a timer by itself: the first epoch and forced
 * rotations are published at once and activated once every member acked (the ack timeout is out of
 * reach). The grace that keeps the previous epoch installed after an activation is ended by the test
 * (endGrace) once every host seals with the new epoch and what was sealed before has arrived: what
 * --key-grace covers in production then holds however slow the test machine is, and a leader or
 * gateway that retires too early still shows.
 */
export const CLUSTER_SCHEDULE: ScheduleConfig = scheduleConfig({
  intervalMs: 365 * 24 * 3_600_000,
  ackTimeoutMs: 30 * 24 * 3_600_000,
  graceMs: 60_000,
  retiredLingerMs: 0,
});

interface PendingTimer {
  readonly due: number;
  readonly fn: () => void;
  readonly handle: NodeJS.Timeout;
}

/**
 * The key schedule's clock: real time plus the jumps a test makes with advance(), which fires the
 * timers that became due. Retries keep running in real time.
 */
export class SteppedClock implements Clock {
  #offset = 0;
  readonly #timers = new Set<PendingTimer>();

  now(): number {
    return Date.now() + this.#offset;
  }

  setTimer(ms: number, fn: () => void): () => void {
    const wait = Math.min(Math.max(0, ms), 2 ** 31 - 1);
    const timer: PendingTimer = {
      due: this.now() + wait,
      fn,
      handle: setTimeout(() => this.#fire(timer), wait).unref(),
    };
    this.#timers.add(timer);
    return () => {
      clearTimeout(timer.handle);
      this.#timers.delete(timer);
    };
  }

  advance(ms: number): void {
    this.#offset += ms;
    const due = [...this.#timers].filter((t) => t.due <= this.now()).sort((a, b) => a.due - b.due);
    for (const t of due) this.#fire(t);
  }

  #fire(timer: PendingTimer): void {
    clearTimeout(timer.handle);
    if (this.#timers.delete(timer)) timer.fn();
  }
}

/** Every frame a test sends carries this, so that a capture can look for it in what should be ciphertext. */
const MARKER = 'veil-frame:';
const MARKER_BYTES = new TextEncoder().encode(MARKER);

export interface ClusterOptions {
  hosts: number;
  /** Host id → os (default linux); a Windows host is no member of encrypted networks. */
  os?: Record<string, string>;
  leaseTtlSeconds?: number;
  /**
   * When a datagram arrives (default sync: in the call that sent it). The underlay is faster than any
   * watch, so what a receiver can open is decided by its state when the datagram was sealed: a
   * sender ahead of a receiver shows at once, whatever the machine's load.
   */
  delivery?: Delivery;
  /**
   * Host n's store watches lag by (n - 1) times this (default 10 ms): real gateways see each change at
   * different times, and make-before-break must not depend on their order.
   */
  watchSkewMs?: number;
  sequenceBudget?: number;
  budgetCheckMs?: number;
}

export interface Endpoint {
  readonly id: string;
  readonly name: string;
  readonly hostId: string;
  readonly network: NetworkRecord;
  readonly mac: string;
  readonly ipv4: string;
}

export interface Arrival {
  readonly hostId: string;
  readonly endpointId: string;
  readonly vni: number;
}

/** One ESP datagram a gateway sent, with the key that sealed it (looked up in the sender's SA table as it was sent). */
export interface SealedDatagram {
  readonly from: string;
  readonly to: string;
  readonly spi: number;
  readonly epoch: number;
  /** The SA's salt (RFC 4106 §8.1), part of its KEYMAT: two keys with the same SPI and epoch differ in it. */
  readonly key: string;
  readonly iv: string;
}

/** One simulated machine: what survives a gateway restart (identity, vtep namespace, kernel VTEP) and the running gateway. */
export class SimHost {
  readonly plumbing: RecordingPlumbing;
  readonly vtep: MemoryVtep;
  readonly identity: X25519KeyPair = generateX25519KeyPair();
  readonly logs: string[] = [];
  store!: MemoryStore;
  dataPath!: TsDataPath;
  node!: ClusterHost;
  incarnation = '';
  running = false;
  /** Exit codes the gateway asked for (the host index changed under it). */
  readonly exits: number[] = [];

  constructor(
    readonly id: string,
    readonly n: number,
    readonly os: string,
    delivery: Delivery,
  ) {
    this.plumbing = new RecordingPlumbing(`169.254.${n}.1`, `169.254.${n}.2`);
    this.vtep = new MemoryVtep(this.plumbing.hostAddress, this.plumbing.vtepAddress, delivery);
  }

  get address(): string {
    return `198.18.0.${this.n}`;
  }

  log(line: string): void {
    this.logs.push(line);
    if (this.logs.length > 4000) this.logs.splice(0, 1000);
  }
}

export class Cluster {
  readonly backend = new MemoryBackend();
  /** The operator's client (what `veil network ...` goes through). */
  readonly admin: MemoryStore = this.backend.client();
  readonly wire: MemoryWire;
  readonly hosts = new Map<string, SimHost>();
  readonly schedule = CLUSTER_SCHEDULE;
  readonly clock = new SteppedClock();
  /** Every ESP datagram the gateways sent, for the nonce check. */
  readonly sealed: SealedDatagram[] = [];
  /** Plain VXLAN on the wire claiming an encrypted network's VNI: must stay empty. */
  readonly plainOnEncrypted: WireDatagram[] = [];
  /** ESP datagrams holding a frame's marker in clear: must stay empty. */
  readonly leaks: WireDatagram[] = [];
  /** ESP datagrams whose SPI no outbound SA of the sender has: must stay empty. */
  readonly unknownSealer: WireDatagram[] = [];
  /** marker → where it was delivered. */
  readonly arrivals = new Map<string, Arrival[]>();
  /** Delivered to a VTEP where no container has the frame's destination MAC. */
  readonly strays: Array<{ hostId: string; vni: number; marker: string }> = [];
  readonly sent = new Map<string, { from: Endpoint; to: Endpoint }>();
  /** Drop counters of gateways that have stopped (their data path's counters go with them). */
  readonly #stoppedDrops: Array<{ hostId: string; vni: number | null; drops: Partial<Record<DropReason, number>> }> =
    [];
  readonly #networks = new Map<number, NetworkRecord>();
  #frames = 0;
  readonly #started = Date.now();

  constructor(readonly options: ClusterOptions) {
    this.wire = new MemoryWire(options.delivery ?? 'sync');
    this.wire.tap((d) => this.#inspect(d));
    for (let n = 1; n <= options.hosts; n++) {
      const id = `h${n}`;
      const host = new SimHost(id, n, options.os?.[id] ?? 'linux', options.delivery ?? 'sync');
      host.vtep.listen((vxlan) => this.#bridge(host, vxlan));
      this.hosts.set(id, host);
    }
  }

  host(id: string): SimHost {
    const h = this.hosts.get(id);
    if (!h) throw new Error(`no host ${id}`);
    return h;
  }

  running(): SimHost[] {
    return [...this.hosts.values()].filter((h) => h.running);
  }

  /** Starts the gateway of `id` as a new process: a new store client, data path and incarnation, the same identity. */
  async start(id: string): Promise<void> {
    const host = this.host(id);
    if (host.running) throw new Error(`${id} is running`);
    host.incarnation = randomBytes(8).toString('hex');
    host.store = this.backend.client({ watchDelayMs: (host.n - 1) * (this.options.watchSkewMs ?? 10) });
    host.dataPath = new TsDataPath({
      vtepAddress: host.plumbing.vtepAddress,
      peerNet: host.plumbing.peerNet,
      underlay: this.wire.underlay(host.address),
      vtep: host.vtep,
      provider: nodeAeadProvider,
    });
    host.node = assembleClusterHost({
      store: host.store,
      plumbing: host.plumbing,
      dataPath: host.dataPath,
      hostId: id,
      address: host.address,
      os: host.os,
      identity: host.identity,
      incarnation: host.incarnation,
      leaseTtlSeconds: this.options.leaseTtlSeconds ?? 1,
      sequenceBudget: this.options.sequenceBudget ?? DEFAULT_SEQUENCE_BUDGET,
      schedule: this.schedule,
      clock: this.clock,
      log: (level, event, fields) =>
        host.log(`${Date.now() - this.#started} ${level} ${event}${fields ? ` ${JSON.stringify(fields)}` : ''}`),
      exit: (code) => void host.exits.push(code),
      ...(this.options.budgetCheckMs ? { budgetCheckMs: this.options.budgetCheckMs } : {}),
    });
    await host.node.start();
    host.running = true;
  }

  /** An orderly stop (`veil gateway` on SIGTERM): leadership and lease given up, then the store client closed. */
  async stop(id: string): Promise<void> {
    const host = this.host(id);
    if (!host.running) return;
    host.running = false;
    this.#keepDrops(host);
    await host.node.stop();
    await host.store.close();
  }

  /**
   * A crash: the sockets and the store client go at once (the lease expires after its TTL, as a dead
   * process's does); the rest of the process is then stopped so nothing of it keeps running here.
   */
  async kill(id: string): Promise<void> {
    const host = this.host(id);
    if (!host.running) return;
    host.running = false;
    this.#keepDrops(host);
    await host.dataPath.stop();
    await host.store.close();
    await host.node.stop().catch(() => undefined);
  }

  /** Cuts host `id` off etcd (its data path keeps running), or reconnects it. */
  partition(id: string, cutOff = true): void {
    this.host(id).store.setReachable(!cutOff);
  }

  /** An orderly stop, then a new process: a new incarnation, the same identity. */
  async restart(id: string): Promise<void> {
    await this.stop(id);
    await this.start(id);
  }

  /** Stops every gateway that runs; never throws (afterEach). */
  async close(): Promise<void> {
    for (const h of this.running()) await this.stop(h.id).catch(() => undefined);
    await this.admin.close();
  }

  // ---- networks and containers (through the store, as the API writes them) ----

  async network(name: string, opts: { encrypted?: boolean; subnet?: string } = {}): Promise<NetworkRecord> {
    const net = await this.admin.createNetwork({
      name,
      encrypted: opts.encrypted ?? true,
      ipam: { subnet: opts.subnet ?? '10.20.0.0/24' },
    });
    this.#networks.set(net.vni, net);
    return net;
  }

  async deleteNetwork(network: NetworkRecord): Promise<void> {
    await this.admin.deleteNetwork(network.id);
  }

  /** Connects a container (its MAC derived from its address unless `mac` is given, as Docker does). */
  async connect(network: NetworkRecord, hostId: string, name: string, mac?: string): Promise<Endpoint> {
    const ep = await this.admin.createEndpoint({
      networkId: network.id,
      name,
      hostId,
      sandbox: { netns: `/run/netns/${name}` },
      ...(mac ? { mac } : {}),
    });
    return { id: ep.id, name, hostId, network, mac: ep.mac, ipv4: ep.ipv4 };
  }

  async disconnect(ep: Endpoint): Promise<void> {
    await this.admin.deleteEndpoint(ep.network.id, ep.id);
  }

  /** Every running host has every other as a peer, the networks plumbed, local containers attached and remote MACs programmed. */
  async settled(endpoints: readonly Endpoint[], timeoutMs = 10_000): Promise<void> {
    await until(
      'every host to converge on the control plane',
      () => {
        const running = this.running();
        return running.every((h) => {
          const others = running.filter((o) => o !== h);
          if (h.node.agent.status().peers.join() !== ids(others)) return false;
          // Each peer as it runs now (a restarted one has a new incarnation, so new SAs).
          const known = new Map(h.node.agent.hosts().map((r) => [r.id, r.incarnation]));
          if (others.some((o) => known.get(o.id) !== o.incarnation)) return false;
          return endpoints.every((ep) => {
            if (!this.host(ep.hostId).running) return true;
            const vni = ep.network.vni;
            if (ep.hostId === h.id) return h.plumbing.containers.has(`${vni}/${ep.id}`);
            return (h.plumbing.fdb.get(vni) ?? []).some((e) => e.mac === ep.mac);
          });
        });
      },
      timeoutMs,
    );
    for (const h of this.running()) await h.node.agent.settled();
  }

  // ---- keys ----

  async epochs(network: NetworkRecord): Promise<KeyEpochRecord[]> {
    return (await this.admin.getEpochs(network.id)).items;
  }

  /** The hosts etcd holds a wrapped copy of the epoch for. */
  async copyHolders(network: NetworkRecord, epoch: number): Promise<string[]> {
    return (await this.admin.listCopies(network.id)).items.filter((c) => c.epoch === epoch).map((c) => c.hostId);
  }

  async newestEpoch(network: NetworkRecord): Promise<number> {
    return (await this.epochs(network)).reduce((max, r) => Math.max(max, r.epoch), 0);
  }

  /** The epoch hosts seal with (the newest active; 0 before the first), not the standby after it. */
  async currentEpoch(network: NetworkRecord): Promise<number> {
    return currentEpoch(await this.epochs(network))?.epoch ?? 0;
  }

  /** True when only the current epoch and its standby are left (every older one deleted). */
  async onlyCurrentAndStandby(network: NetworkRecord): Promise<boolean> {
    const states = (await this.epochs(network)).map((r) => r.state).sort();
    return states.join() === 'active,published';
  }

  /** Asks for a rotation on `hostId`, as POST /networks/{id}/rotate does there. */
  rotate(network: NetworkRecord, hostId: string): Promise<{ afterEpoch: number }> {
    return this.host(hostId).node.keys.requestRotation(network.id, `test:${hostId}`);
  }

  /** True when every running member seals `network` with `epoch` toward every running peer that can encrypt. */
  sealsEverywhere(network: NetworkRecord, epoch: number): boolean {
    const members = this.running().filter((h) => h.os !== 'windows');
    return members.every((h) => {
      const pairs = h.node.gateway.status().pairs.filter((p) => p.vni === network.vni);
      return members.filter((o) => o !== h).every((o) => pairs.find((p) => p.peer === o.id)?.outbound?.epoch === epoch);
    });
  }

  /** Waits until `epoch` (default: the newest active) is active in etcd and every running member seals with it. */
  async activeEverywhere(network: NetworkRecord, epoch?: number, timeoutMs = 10_000): Promise<number> {
    let want = epoch ?? 0;
    await until(
      `epoch ${epoch ?? 'newest active'} of ${network.name} to be active on every host`,
      async () => {
        const records = await this.epochs(network);
        want = epoch ?? currentEpoch(records)?.epoch ?? 0;
        return records.some((r) => r.epoch === want && r.state === 'active') && this.sealsEverywhere(network, want);
      },
      timeoutMs,
    );
    return want;
  }

  /**
   * Waits until an epoch newer than `after` seals everywhere, then ends the grace of the one before
   * (it is retired and deleted): the schedule may publish the next. Returns the new epoch.
   */
  async nextEpoch(network: NetworkRecord, after: number): Promise<number> {
    await until(`an epoch after ${after} active`, async () => (await this.currentEpoch(network)) > after);
    const epoch = await this.activeEverywhere(network);
    await this.endGrace();
    return epoch;
  }

  /**
   * Ends the grace period (CLUSTER_SCHEDULE) once what it is for is done: call it when every host seals
   * with the newest epoch; it waits until every datagram sent so far, sealed under older epochs, has
   * arrived, then the leader retires and deletes what only they used.
   */
  async endGrace(): Promise<void> {
    const sent = this.wire.counts.sent;
    await until('the datagrams in flight to arrive', () => this.wire.settled(sent));
    this.clock.advance(this.schedule.graceMs + this.schedule.retiredLingerMs);
  }

  /** One forced rotation from `hostId`, waited for until the new epoch seals everywhere (then the grace ends). */
  async rotateAndWait(network: NetworkRecord, hostId: string): Promise<number> {
    const before = await this.currentEpoch(network);
    await this.rotate(network, hostId);
    return this.nextEpoch(network, before);
  }

  /**
   * Resolves with the epoch number as soon as a record of `network` enters `state` (the operator's
   * watch has no delay, so a test acts before the lagging hosts have seen it).
   */
  async nextEpochIn(network: NetworkRecord, state: KeyEpochRecord['state']): Promise<number> {
    let handle: { cancel(): Promise<void> } | undefined;
    const epoch = await new Promise<number>((resolve) => {
      void this.admin
        .watch(keys.keysPrefix(network.id), this.backend.revision + 1, {
          onEvents: (events) => {
            for (const e of events) {
              const r = e.value as KeyEpochRecord | null;
              if (e.type === 'put' && r?.state === state) resolve(r.epoch);
            }
          },
          onResync: () => undefined,
        })
        .then((h) => (handle = h));
    });
    await handle?.cancel();
    return epoch;
  }

  leader(): SimHost | undefined {
    return this.running().find((h) => h.node.leader.isLeader);
  }

  // ---- frames ----

  /**
   * A frame from container `from` to container `to`, as the kernel sends it: VXLAN with the network's
   * VNI from the VTEP to the gateway port(s) its FDB names for `to`'s MAC. Returns its marker.
   */
  send(from: Endpoint, to: Endpoint): string {
    const host = this.host(from.hostId);
    const vni = from.network.vni;
    if (!host.running || !host.plumbing.containers.has(`${vni}/${from.id}`))
      throw new Error(`${from.name} is not attached on ${from.hostId}`);
    const marker = `${MARKER}${from.name}>${to.name}#${++this.#frames}`;
    const frame = udpFrame({ mac: from.mac, ip: from.ipv4 }, { mac: to.mac, ip: to.ipv4 }, 7777, marker);
    const vxlan = new Uint8Array(8 + frame.length);
    vxlan.set(encodeVxlanHeader(vni), 0);
    vxlan.set(frame, 8);
    this.sent.set(marker, { from, to });
    // The kernel's flow entropy (RFC 7348 §5): a source port per inner flow.
    const srcPort = 49_152 + (this.#frames % 16_384);
    for (const gateway of host.plumbing.gatewaysFor(vni, to.mac)) host.vtep.send(gateway, vxlan, { port: srcPort });
    return marker;
  }

  /** Sends one frame per ordered pair of `endpoints` every `everyMs` until stop(), which returns the markers sent. */
  traffic(endpoints: readonly Endpoint[], everyMs = 2): { stop(): string[] } {
    const markers: string[] = [];
    const timer = setInterval(() => {
      for (const a of endpoints) for (const b of endpoints) if (a !== b) markers.push(this.send(a, b));
    }, everyMs);
    return {
      stop() {
        clearInterval(timer);
        return markers;
      },
    };
  }

  /**
   * Waits until every marker arrived somewhere (then a little longer, so that a duplicate would show),
   * or until nothing arrived for `quietMs`: the assertions that follow then say what is missing and why.
   */
  async delivered(markers: readonly string[], quietMs = 2_000): Promise<void> {
    let seen = -1;
    let since = Date.now();
    for (;;) {
      const arrived = markers.filter((m) => this.arrivals.has(m)).length;
      if (arrived === markers.length) break;
      if (arrived !== seen) [seen, since] = [arrived, Date.now()];
      else if (Date.now() - since > quietMs) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    await new Promise((r) => setTimeout(r, 20));
  }

  /** The markers that did not arrive exactly once, at the container they were sent to. */
  notExactlyOnce(markers: readonly string[]): string[] {
    return markers.filter((m) => {
      const got = this.arrivals.get(m) ?? [];
      const want = this.sent.get(m)?.to;
      return got.length !== 1 || got[0]!.endpointId !== want?.id || got[0]!.vni !== want.network.vni;
    });
  }

  /** Drop counters summed over every gateway (stopped ones included), optionally of one network or host. */
  drops(filter: { vni?: number; hostId?: string } = {}): Partial<Record<DropReason, number>> {
    const total: Partial<Record<DropReason, number>> = {};
    const add = (drops: Partial<Record<DropReason, number>>) => {
      for (const [reason, n] of Object.entries(drops) as Array<[DropReason, number]>)
        total[reason] = (total[reason] ?? 0) + n;
    };
    const wanted = (hostId: string, vni: number | null) =>
      (filter.hostId === undefined || filter.hostId === hostId) && (filter.vni === undefined || filter.vni === vni);
    for (const d of this.#stoppedDrops) if (wanted(d.hostId, d.vni)) add(d.drops);
    for (const h of this.running()) for (const d of dropsOf(h)) if (wanted(h.id, d.vni)) add(d.drops);
    return total;
  }

  /** Sealed datagrams that reused a (key, IV) pair, i.e. a GCM nonce. */
  nonceReuse(): SealedDatagram[] {
    const seen = new Set<string>();
    return this.sealed.filter((s) => {
      const k = `${s.from}>${s.to}/${s.spi}/${s.epoch}/${s.key}/${s.iv}`;
      if (seen.has(k)) return true;
      seen.add(k);
      return false;
    });
  }

  /** The wire checks every test ends with: no nonce reuse, no plain VXLAN of an encrypted network, no frame in clear in ESP. */
  wireProblems(): Record<string, number> {
    return {
      nonceReuse: this.nonceReuse().length,
      plainOnEncrypted: this.plainOnEncrypted.length,
      leaks: this.leaks.length,
      unknownSealer: this.unknownSealer.length,
    };
  }

  /** What a failed test prints: the drops, the wire's counters and each host's last log lines. */
  dumpLogs(lines = 150): string {
    const hosts = [...this.hosts.values()].map(
      (h) =>
        `--- ${h.id} (${h.running ? 'running' : 'stopped'}) drops ${JSON.stringify(this.drops({ hostId: h.id }))}\n` +
        h.logs.slice(-lines).join('\n'),
    );
    return [`wire ${JSON.stringify(this.wire.counts)}`, ...hosts].join('\n');
  }

  #keepDrops(host: SimHost): void {
    for (const d of dropsOf(host)) this.#stoppedDrops.push({ hostId: host.id, ...d });
  }

  /** The wire tap: what every test checks of what crosses the underlay. */
  #inspect(d: WireDatagram): void {
    if (d.injected) return;
    if (d.to.port === VXLAN_PORT) {
      const header = parseVxlanHeader(d.datagram);
      if (header.ok && this.#networks.get(header.vni)?.encrypted) this.plainOnEncrypted.push(d);
      return;
    }
    if (d.to.port !== ESP_IN_UDP_PORT) return;
    if (contains(d.datagram, MARKER_BYTES)) this.leaks.push(d);
    const sender = this.#byAddress(d.from.address);
    const receiver = this.#byAddress(d.to.address);
    const spi = readU32(d.datagram, 0);
    // The sender sealed it in this same call (TsDataPath seals and sends synchronously): its current SA.
    const sa = sender?.dataPath.forwarder.sas
      .allOutbound()
      .find((s) => s.spi === spi && s.label.peerId === receiver?.id);
    if (!sender || !receiver || !sa) {
      this.unknownSealer.push(d);
      return;
    }
    this.sealed.push({
      from: sender.id,
      to: receiver.id,
      spi,
      epoch: sa.label.epoch,
      key: bytesToHex(sa.cipher.salt),
      iv: bytesToHex(d.datagram.subarray(ESP_IV_OFFSET, ESP_IV_OFFSET + ESP_IV_LENGTH)),
    });
  }

  #byAddress(address: string): SimHost | undefined {
    return [...this.hosts.values()].find((h) => h.address === address);
  }

  /** The bridge behind a VTEP: a delivered frame goes to the host's container(s) with its destination MAC. */
  #bridge(host: SimHost, vxlan: Uint8Array): void {
    const header = parseVxlanHeader(vxlan);
    if (!header.ok) return;
    const frame = vxlan.subarray(8);
    const dstMac = [...frame.subarray(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
    const marker = new TextDecoder().decode(frame.subarray(14 + 20 + 8));
    const containers = [...host.plumbing.containers.values()].filter((c) => c.vni === header.vni && c.mac === dstMac);
    if (containers.length === 0) this.strays.push({ hostId: host.id, vni: header.vni, marker });
    for (const c of containers) {
      const list = this.arrivals.get(marker) ?? [];
      list.push({ hostId: host.id, endpointId: c.endpointId, vni: header.vni });
      this.arrivals.set(marker, list);
    }
  }
}

/** waitUntil, polling every 5 ms: the cluster's waits are many and short. */
export const until = (what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> =>
  waitUntil(what, cond, timeoutMs, 5);

const ids = (hosts: readonly SimHost[]) =>
  hosts
    .map((h) => h.id)
    .sort()
    .join();

function dropsOf(host: SimHost): Array<{ vni: number | null; drops: Partial<Record<DropReason, number>> }> {
  const status = host.node.gateway.status();
  return [...status.pairs.map((p) => ({ vni: p.vni, drops: p.drops })), { vni: null, drops: status.unattributedDrops }];
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/**
 * Clusters for the tests of one file: each started one is closed after its test, failed or not,
 * and a failed test prints the hosts' last log lines.
 */
export function useClusters(): (options: ClusterOptions) => Promise<Cluster> {
  // startCluster: the gateways start in order (h1 first, so it leads), then each sees the others.
  const open: Cluster[] = [];
  afterEach(async () => {
    for (const c of open.splice(0)) await c.close();
  });
  return async (options) => {
    const cluster = new Cluster(options);
    open.push(cluster);
    onTestFailed(() => console.log(cluster.dumpLogs()));
    for (const id of cluster.hosts.keys()) await cluster.start(id);
    await cluster.settled([]);
    return cluster;
  };
}
