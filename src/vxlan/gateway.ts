import { equalBytes as bytesEqual } from '../crypto/bytes.js';
import { SecretKey } from '../crypto/secret.js';
import type { DropReason } from './wire/drops.js';
import { VTEP_GATEWAY_PORT, VXLAN_PORT } from './wire/constants.js';
import type { DataPath, DataPathTables, PairStatus, TapPort } from './datapath.js';
import type { NetnsRef } from '../host/netns.js';
import type { PlainNetworkCounters, Plumbing, PortSecurityCounters, VtepFirewallCounter } from './plumbing.js';
import { deriveSaKeySpecs, type SaHost } from './sa/derive.js';
import { gatewayAddress } from '../model/peer-net.js';
import { tapPortName } from '../host/names.js';
import type { VtepKind } from '../model/vtep.js';

/**
 * How often status()'s host counters are read: the vtep firewall, port security, plain networks in the
 * kernel, and path MTUs toward peers (`nft` and `ip` runs).
 */
export const COUNTERS_POLL_MS = 5_000;

export interface GatewayPeer extends SaHost {
  readonly address: string;
  /** False for a host that cannot encrypt (Windows): it gets no SAs, so encrypted traffic toward it fails closed. */
  readonly encrypts?: boolean;
}

export interface GatewayNetwork {
  readonly id: string;
  readonly index: number;
  readonly vni: number;
  readonly encrypted: boolean;
}

/** Keys of one network epoch, from the static configuration or (later) the key schedule. */
export interface NetworkEpochKey {
  readonly epoch: number;
  readonly secret: SecretKey;
}

export interface GatewayOptions {
  readonly self: SaHost & { readonly address: string };
  readonly privateKey: SecretKey;
  readonly plumbing: Plumbing;
  /** TsDataPath (Forwarder + node:dgram) or NativeDataPath (native/, config `dataPath: "native"`). */
  readonly dataPath: DataPath;
  readonly sequenceBudget?: number;
  /** The underlay MTU the overlay MTUs derive from, and where it came from (an interface, --mtu), for status. */
  readonly underlayMtu?: { readonly mtu: number; readonly from: string };
  /**
   * Where encrypted networks' frames meet the data path (docs/plumbing.md "The TAP port"): 'tap' (the
   * default) where the data path can make TAP ports, else, and for a network whose TAP port failed, 'kernel'.
   */
  readonly vtep?: VtepKind;
  /** Info unless `level` says warn (something the operator should act on). */
  readonly log?: (event: string, fields?: Record<string, unknown>, level?: 'info' | 'warn') => void;
}

export interface GatewayStatus {
  host: string;
  /** The advertised address and the underlay MTU (docs/wire.md "MTU"), with where the MTU came from. */
  underlay?: { address: string; mtu: number; mtuFrom: string };
  /**
   * Each peer with its underlay address and its gateway address (docs/plumbing.md "Gateway addresses"),
   * and the path MTU toward it when the host learned one below the interface's (docs/wire.md "MTU").
   */
  peers: Array<{ id: string; address: string; gateway: string; pathMtu?: number }>;
  /** Why the path MTUs could not be read, when they could not. */
  pathMtuError?: string;
  /** Each network, and for an encrypted one where its frames meet the data path and why there. */
  networks: Array<GatewayNetwork & { vtep?: NetworkVtep }>;
  pairs: PairStatus[];
  unattributedDrops: Partial<Record<DropReason, number>>;
  sendFailures: number;
  /** How many entries the data path holds (a leak shows as growth: docs/operations.md "Footprint"). */
  tables?: DataPathTables;
  /**
   * VXLAN the vtep netns's firewall refused: sent to the VTEP by anything but this gateway (docs/plumbing.md
   * "No local injection"), as last read (every COUNTERS_POLL_MS), or why it could not be read.
   */
  vtepFirewall?: (VtepFirewallCounter & { readAt: string }) | { error: string };
  /**
   * Frames from container ports that port security dropped (docs/plumbing.md "Port security"): a source
   * that is not the port's own, or not IPv4/ARP; read with vtepFirewall, or why it could not be read.
   */
  portSecurity?: (PortSecurityCounters & { readAt: string }) | { error: string };
  /**
   * Plain networks in the kernel (docs/plumbing.md "Plain networks"): what the underlay firewall refused
   * and each network's VXLAN device counters; read with vtepFirewall, or why they could not be read.
   */
  plainNetworks?: (PlainNetworkCounters & { readAt: string }) | { error: string };
}

/** An encrypted network's VTEP: a TAP port (with or without the kernel's offloads) or the kernel's VXLAN device. */
export interface NetworkVtep {
  kind: VtepKind;
  offloads?: boolean;
  /** A TAP port's remote MACs, each sent to its own host's peer only (no flooding). */
  macs?: number;
  /** Why the kernel's device, when a TAP port was wanted. */
  reason?: string;
}

/** Keys of one network epoch as the gateway holds them: the secret, and whether outbound uses it. */
interface EpochEntry {
  readonly secret: SecretKey;
  active: boolean;
}

/** A container of this host on one network, as the plumbing attaches it. */
export interface LocalEndpoint {
  readonly vni: number;
  readonly endpointId: string;
  readonly netns: NetnsRef;
  readonly mac: string;
  /** With prefix length, e.g. "10.42.0.5/24". */
  readonly ipv4: string;
  readonly gateway?: string;
  /** Inside the container; default eth0. */
  readonly ifName?: string;
}

/**
 * One host's data plane: plumbs the vtep namespace, bridges and VXLAN devices,
 * points the FDB at one gateway address per peer, derives the SAs of every live
 * epoch, and hands networks, peers and SAs to its data path (TypeScript or native).
 *
 * Epochs follow docs/keys.md "Rotation": installEpoch puts in the inbound SAs,
 * activateEpoch switches outbound, retireEpoch takes the inbound SAs out. A peer
 * that arrives later gets the SAs of every live epoch at once.
 */
export class Gateway {
  readonly #networks = new Map<number, GatewayNetwork>();
  readonly #peers = new Map<string, GatewayPeer>();
  /** vni → epoch → entry; at most three live epochs per network (docs/keys.md "Rotation"). */
  readonly #epochs = new Map<number, Map<number, EpochEntry>>();
  #vtepFirewall: GatewayStatus['vtepFirewall'];
  #portSecurity: GatewayStatus['portSecurity'];
  #plainNetworks: GatewayStatus['plainNetworks'];
  /** Underlay address → the path MTU the host learned toward it (read with the firewall counters). */
  #pathMtus = new Map<string, number>();
  #pathMtuError: string | undefined;
  #countersTimer: NodeJS.Timeout | undefined;
  /** Encrypted networks' VTEPs, by VNI. */
  readonly #vteps = new Map<number, NetworkVtep>();
  /** TAP ports' remote MACs: vni → MAC → peer id (the data path holds them by host index). */
  readonly #tapMacs = new Map<number, Map<string, string>>();

  constructor(readonly options: GatewayOptions) {}

  async start(): Promise<void> {
    await this.options.plumbing.ensureHost();
    await this.refreshCounters();
    const p = this.options.plumbing;
    if (p.vtepFirewallDrops || p.portSecurityDrops || p.plainNetworkCounters || p.pathMtus) {
      this.#countersTimer = setInterval(() => void this.refreshCounters(), COUNTERS_POLL_MS).unref();
    }
    await this.options.dataPath.start();
    this.#log('gateway started', { host: this.options.self.id, address: this.options.self.address });
  }

  async stop(options: { unplumb?: boolean } = {}): Promise<void> {
    clearInterval(this.#countersTimer);
    this.#countersTimer = undefined;
    await this.options.dataPath.stop();
    if (options.unplumb) await this.options.plumbing.teardownHost();
    for (const epochs of this.#epochs.values()) for (const e of epochs.values()) e.secret.wipe();
    this.#epochs.clear();
    this.#vteps.clear();
    this.#tapMacs.clear();
    this.#log('gateway stopped', { unplumbed: options.unplumb ?? false });
  }

  hasNetwork(vni: number): boolean {
    return this.#networks.has(vni);
  }

  /** Adds the network; with `key` (static configuration) its epoch is installed and activated at once. */
  async addNetwork(network: GatewayNetwork, key?: NetworkEpochKey): Promise<void> {
    const tapPort = this.options.dataPath.tapPort;
    const wanted: VtepKind = tapPort && this.options.vtep !== 'kernel' ? 'tap' : 'kernel';
    const vtep = network.encrypted ? (this.#vteps.get(network.vni)?.kind ?? wanted) : undefined;
    await this.options.plumbing.ensureNetwork({
      vni: network.vni,
      encrypted: network.encrypted,
      ...(vtep ? { vtep } : {}),
    });
    this.#networks.set(network.vni, network);
    // A plain network in the kernel never reaches the data path (docs/plumbing.md "Plain networks").
    if (!this.#inKernel(network)) this.options.dataPath.setNetwork(network);
    // Decided once per network: adding it again keeps its VTEP (and a TAP port's descriptor).
    if (vtep && !this.#vteps.has(network.vni)) {
      if (vtep === 'tap') await this.#attachTap(network.vni);
      else
        this.#vteps.set(network.vni, {
          kind: 'kernel',
          reason: tapPort ? '--vtep kernel' : 'the TypeScript data path has no TAP port',
        });
    }
    for (const peer of this.#peers.values()) await this.#ensureFlood(peer, network);
    this.#log('network added', {
      vni: network.vni,
      encrypted: network.encrypted,
      ...(network.encrypted ? { vtep: this.#vteps.get(network.vni) } : { path: this.options.plumbing.plainPath }),
    });
    if (key) {
      await this.installEpoch(network.vni, key.epoch, key.secret);
      await this.activateEpoch(network.vni, key.epoch);
    } else if (network.encrypted) {
      // Fail closed: frames of this network are dropped (no-outbound-sa) until an epoch is active.
      this.#log('no keys yet for encrypted network; its traffic is dropped until they arrive', { vni: network.vni });
    }
  }

  async removeNetwork(vni: number): Promise<void> {
    const network = this.#networks.get(vni);
    if (!network || !this.#inKernel(network)) this.options.dataPath.removeNetwork(vni);
    this.#networks.delete(vni);
    this.#vteps.delete(vni); // the data path closed its TAP port with the network
    this.#tapMacs.delete(vni);
    for (const e of this.#epochs.get(vni)?.values() ?? []) e.secret.wipe();
    this.#epochs.delete(vni);
    await this.options.plumbing.removeNetwork(vni);
    this.#log('network removed', { vni });
  }

  /**
   * Adds a peer, or replaces it when its address, index, key or incarnation changed (a restart). Its
   * gateway address is its index's: another peer holding that index is removed first, so one
   * address never names two peers. The data path knows the peer before any FDB entry points at it.
   */
  async addPeer(peer: GatewayPeer): Promise<void> {
    const known = this.#peers.get(peer.id);
    if (known && samePeer(known, peer)) return;
    if (known) await this.removePeer(peer.id);
    for (const other of this.#peers.values()) if (other.index === peer.index) await this.removePeer(other.id);
    await this.options.dataPath.addPeer({ id: peer.id, index: peer.index, address: peer.address });
    // Before any FDB entry points at it: its plain VXLAN is let in as soon as ours goes out.
    await this.options.plumbing.ensureUnderlayPeer(peer.address);
    this.#peers.set(peer.id, peer);
    const gateway = this.#gateway(peer);
    const failures: string[] = [];
    for (const network of this.#networks.values()) {
      await this.#ensureFlood(peer, network);
      for (const [epoch, entry] of this.#epochs.get(network.vni) ?? []) {
        try {
          this.#install(peer, network, epoch, entry.secret, entry.active ? 'both' : 'inbound');
        } catch (err) {
          failures.push(`vni ${network.vni} epoch ${epoch}: ${(err as Error).message}`);
        }
      }
    }
    this.#log(known ? 'peer changed' : 'peer added', {
      peer: peer.id,
      address: peer.address,
      gateway,
      incarnation: peer.incarnation,
    });
    if (failures.length > 0) {
      // Forget the peer, so the caller's retry redoes every step instead of finding it "already added".
      await this.removePeer(peer.id);
      throw new Error(`peer ${peer.id}: SA installation failed (${failures.join('; ')})`);
    }
  }

  async removePeer(peerId: string): Promise<void> {
    const peer = this.#peers.get(peerId);
    if (!peer) return;
    for (const network of this.#networks.values()) {
      const tap = this.#tapPort(network.vni);
      if (tap) tap.removeFlood(network.vni, peerId);
      else await this.options.plumbing.removePeer(network.vni, this.#fdbDestination(peer, network));
    }
    // The data path forgets the peer's MACs on TAP ports with it, as removePeer above does the kernel's FDB.
    await this.options.dataPath.removePeer(peerId);
    for (const macs of this.#tapMacs.values()) for (const [mac, id] of macs) if (id === peerId) macs.delete(mac);
    this.#peers.delete(peerId);
    // Hosts behind one NAT share an address: it stays allowed while one of them is a peer.
    if (![...this.#peers.values()].some((p) => p.address === peer.address))
      await this.options.plumbing.removeUnderlayPeer(peer.address);
    this.#log('peer removed', { peer: peerId });
  }

  /**
   * Removes FDB entries that point at no current peer (left by a gateway that died, or by peers that
   * went away while it was down), or anywhere else: cleartext goes to peers only. Underlay addresses
   * no current peer has leave the underlay firewall too.
   */
  async pruneStaleFdb(): Promise<number> {
    let removed = 0;
    for (const network of this.#networks.values()) {
      if (this.#tapPort(network.vni)) continue; // no kernel FDB: the data path's goes with its peers
      const port = this.#inKernel(network) ? VXLAN_PORT : VTEP_GATEWAY_PORT;
      const current = new Set([...this.#peers.values()].map((p) => this.#fdbDestination(p, network)));
      for (const e of await this.options.plumbing.listFdb(network.vni)) {
        if (current.has(e.dst) && e.port === port) continue;
        await this.options.plumbing.removeFdbEntry(network.vni, e);
        removed++;
      }
    }
    const addresses = new Set([...this.#peers.values()].map((p) => p.address));
    let forgotten = 0;
    for (const address of await this.options.plumbing.listUnderlayPeers()) {
      if (addresses.has(address)) continue;
      await this.options.plumbing.removeUnderlayPeer(address);
      forgotten++;
    }
    if (removed > 0 || forgotten > 0)
      this.#log('stale FDB entries removed', { removed, underlayPeersForgotten: forgotten });
    return removed;
  }

  /**
   * Step 1 of a rotation: the epoch's inbound SAs from every peer. The gateway keeps its own copy of
   * `secret`. The epoch counts as installed only when every peer's SA is in: a partial install throws,
   * and the caller's retry redoes it (installs are idempotent), so an ack never covers a missing SA.
   */
  async installEpoch(vni: number, epoch: number, secret: SecretKey): Promise<void> {
    const network = this.#encryptedNetwork(vni);
    const epochs = this.#epochs.get(vni) ?? new Map<number, EpochEntry>();
    const known = epochs.get(epoch);
    if (known?.secret.equals(secret)) return;
    const entry: EpochEntry = { secret: new SecretKey(secret.exposeDanger()), active: known?.active ?? false };
    const failures = this.#forEachPeer((peer) =>
      this.#install(peer, network, epoch, entry.secret, entry.active ? 'both' : 'inbound'),
    );
    if (failures.length > 0) {
      entry.secret.wipe();
      // All or nothing: SAs of an epoch this gateway does not hold would never be retired.
      if (!known) this.#forEachPeer((peer) => this.options.dataPath.retireInbound(peer.id, vni, epoch));
      throw new Error(`epoch ${epoch} of network ${vni}: inbound SAs not installed for ${failures.join('; ')}`);
    }
    known?.secret.wipe();
    epochs.set(epoch, entry);
    this.#epochs.set(vni, epochs);
    this.#log('epoch installed', { vni, epoch, peers: this.#peers.size });
  }

  /** Step 3: outbound to every peer switches to `epoch`; the older epochs stay installed inbound. */
  async activateEpoch(vni: number, epoch: number): Promise<void> {
    const network = this.#encryptedNetwork(vni);
    const entry = this.#epochs.get(vni)?.get(epoch);
    if (!entry) throw new RangeError(`epoch ${epoch} of network ${vni} is not installed`);
    if (entry.active) return;
    const failures = this.#forEachPeer((peer) => this.#install(peer, network, epoch, entry.secret, 'outbound'));
    if (failures.length > 0)
      throw new Error(`epoch ${epoch} of network ${vni}: outbound not switched for ${failures.join('; ')}`);
    for (const [other, e] of this.#epochs.get(vni)!) if (other !== epoch) e.active = false;
    entry.active = true;
    this.#log('epoch activated', { vni, epoch });
  }

  /**
   * Step 4: the epoch's inbound SAs go, and any outbound SA still sealing with it (whatever the
   * bookkeeping says): a retired key never stays in service; that peer fails closed until it has a newer one.
   */
  async retireEpoch(vni: number, epoch: number): Promise<void> {
    const entry = this.#epochs.get(vni)?.get(epoch);
    const sealing = new Set(
      this.options.dataPath
        .status()
        .pairs.filter((p) => p.vni === vni && p.outbound?.epoch === epoch)
        .map((p) => p.peer),
    );
    for (const peer of this.#peers.values()) {
      this.options.dataPath.retireInbound(peer.id, vni, epoch);
      if (entry?.active || sealing.has(peer.id)) this.options.dataPath.removeOutbound(peer.id, vni);
    }
    if (!entry) return;
    entry.secret.wipe();
    this.#epochs.get(vni)!.delete(epoch);
    this.#log('epoch retired', { vni, epoch, wasActive: entry.active, stillSealing: [...sealing] });
  }

  /** Runs `step` for every peer; returns "peer: reason" for those that failed (the others are done). */
  #forEachPeer(step: (peer: GatewayPeer) => void): string[] {
    const failures: string[] = [];
    for (const peer of this.#peers.values()) {
      try {
        step(peer);
      } catch (err) {
        failures.push(`${peer.id}: ${(err as Error).message}`);
      }
    }
    return failures;
  }

  /** The epochs this gateway holds per network (for status; never key bytes). */
  epochs(vni: number): Array<{ epoch: number; active: boolean }> {
    return [...(this.#epochs.get(vni) ?? [])]
      .map(([epoch, e]) => ({ epoch, active: e.active }))
      .sort((a, b) => a.epoch - b.epoch);
  }

  /** Plugs a local container into the network's bridge. */
  async attachEndpoint(endpoint: LocalEndpoint): Promise<void> {
    const { vni, endpointId, netns, mac, ipv4 } = endpoint;
    await this.options.plumbing.attachContainer({
      vni,
      endpointId,
      netns,
      mac,
      ipv4,
      ...(endpoint.gateway ? { gateway: endpoint.gateway } : {}),
      ...(endpoint.ifName ? { ifName: endpoint.ifName } : {}),
    });
    this.#log('endpoint attached', { vni, endpoint: endpointId, mac, ipv4 });
  }

  /** A port for a runtime that moves the interface itself (Docker): returns the name of its host-side end. */
  async attachHostPort(vni: number, endpointId: string, mac: string, ipv4: string): Promise<string> {
    const name = await this.options.plumbing.attachHostPort({ vni, endpointId, mac, ipv4 });
    this.#log('runtime port made', { vni, endpoint: endpointId, mac, ipv4, port: name });
    return name;
  }

  async detachEndpoint(vni: number, endpointId: string): Promise<void> {
    await this.options.plumbing.detachContainer(vni, endpointId);
    this.#log('endpoint detached', { vni, endpoint: endpointId });
  }

  /** Unicast FDB entry: frames for a remote container's MAC go to its host's gateway address only (no flooding). */
  async addRemoteMac(vni: number, peerId: string, mac: string): Promise<void> {
    const peer = this.#peers.get(peerId);
    const network = this.#networks.get(vni);
    if (!peer || !network) return;
    const tap = this.#tapPort(vni);
    if (tap) {
      tap.setMac(vni, mac, peerId);
      const macs = this.#tapMacs.get(vni) ?? new Map<string, string>();
      this.#tapMacs.set(vni, macs.set(mac.toLowerCase(), peerId));
    } else await this.options.plumbing.ensurePeerMac(vni, mac, this.#fdbDestination(peer, network));
  }

  async removeRemoteMac(vni: number, mac: string): Promise<void> {
    if (!this.#networks.has(vni)) return;
    const tap = this.#tapPort(vni);
    if (tap) {
      tap.removeMac(vni, mac);
      this.#tapMacs.get(vni)?.delete(mac.toLowerCase());
    } else await this.options.plumbing.removePeerMac(vni, mac);
  }

  /**
   * Makes the network's TAP port in the vtep netns and puts it on the bridge. Where that fails (no
   * /dev/net/tun, a kernel without TAP), the network gets the kernel VXLAN device instead, and the
   * status and the log say why: the network works either way.
   */
  async #attachTap(vni: number): Promise<void> {
    const tapPort = this.options.dataPath.tapPort!;
    const name = tapPortName(vni);
    try {
      const { offloads } = tapPort.attach(vni, this.options.plumbing.vtepNetnsFile, name);
      await this.options.plumbing.attachTapPort(vni, name);
      this.#vteps.set(vni, { kind: 'tap', offloads });
    } catch (err) {
      tapPort.detach(vni);
      const reason = (err as Error).message;
      await this.options.plumbing.ensureNetwork({ vni, encrypted: true, vtep: 'kernel' });
      this.#vteps.set(vni, { kind: 'kernel', reason });
      this.#warn('no TAP port for the network: its frames go through the kernel VXLAN device', { vni, reason });
    }
  }

  /** The data path's TAP port controls when the network has a TAP port. */
  #tapPort(vni: number): TapPort | undefined {
    return this.#vteps.get(vni)?.kind === 'tap' ? this.options.dataPath.tapPort : undefined;
  }

  /** The peer gets the network's group and unknown-MAC frames: a flood entry, in the kernel's FDB or the TAP port's. */
  async #ensureFlood(peer: GatewayPeer, network: GatewayNetwork): Promise<void> {
    const tap = this.#tapPort(network.vni);
    if (tap) tap.addFlood(network.vni, peer.id);
    else await this.options.plumbing.ensurePeerFlood(network.vni, this.#fdbDestination(peer, network));
  }

  #gateway(peer: GatewayPeer): string {
    return gatewayAddress(this.options.plumbing.peerNet, peer.index);
  }

  /** Whether the network's VXLAN goes from the kernel straight to the underlay (a plain network, kernel path). */
  #inKernel(network: GatewayNetwork): boolean {
    return !network.encrypted && this.options.plumbing.plainPath === 'kernel';
  }

  /** Where the network's FDB sends the peer's frames: its gateway address, or in the kernel its underlay address. */
  #fdbDestination(peer: GatewayPeer, network: GatewayNetwork): string {
    return this.#inKernel(network) ? peer.address : this.#gateway(peer);
  }

  #encryptedNetwork(vni: number): GatewayNetwork {
    const network = this.#networks.get(vni);
    if (!network) throw new RangeError(`network ${vni} is not added`);
    if (!network.encrypted) throw new RangeError(`network ${vni} is not encrypted`);
    return network;
  }

  /** Derives the pair's SAs for one epoch and installs the directions asked for; inbound always first. */
  #install(
    peer: GatewayPeer,
    network: GatewayNetwork,
    epoch: number,
    secret: SecretKey,
    which: 'inbound' | 'outbound' | 'both',
  ): void {
    if (peer.encrypts === false) return;
    const { outbound, inbound } = deriveSaKeySpecs(this.options.self, this.options.privateKey, peer, {
      networkId: network.id,
      networkIndex: network.index,
      vni: network.vni,
      epoch,
      secret,
    });
    try {
      // Make-before-break order: inbound first (docs/keys.md "Rotation").
      if (which !== 'outbound') this.options.dataPath.installInbound(inbound);
      if (which !== 'inbound') this.options.dataPath.activateOutbound(outbound, this.options.sequenceBudget);
    } finally {
      // Each data path keeps its own copy of the key (a cipher context).
      inbound.keymat.wipe();
      outbound.keymat.wipe();
    }
    this.#log('SAs installed', {
      vni: network.vni,
      peer: peer.id,
      epoch,
      which,
      outboundSpi: hex(outbound.spi),
      inboundSpi: hex(inbound.spi),
    });
  }

  /**
   * Reads the host counters now (COUNTERS_POLL_MS says which; status() reports the last read). A failed
   * read is reported, not thrown.
   */
  async refreshCounters(): Promise<void> {
    const plumbing = this.options.plumbing;
    if (plumbing.vtepFirewallDrops) {
      try {
        this.#vtepFirewall = { ...(await plumbing.vtepFirewallDrops()), readAt: new Date().toISOString() };
      } catch (err) {
        this.#vtepFirewall = { error: (err as Error).message };
      }
    }
    if (plumbing.portSecurityDrops) {
      try {
        this.#portSecurity = { ...(await plumbing.portSecurityDrops()), readAt: new Date().toISOString() };
      } catch (err) {
        this.#portSecurity = { error: (err as Error).message };
      }
    }
    if (plumbing.pathMtus) await this.#refreshPathMtus(plumbing.pathMtus.bind(plumbing));
    if (plumbing.plainNetworkCounters && plumbing.plainPath === 'kernel') {
      try {
        this.#plainNetworks = { ...(await plumbing.plainNetworkCounters()), readAt: new Date().toISOString() };
      } catch (err) {
        this.#plainNetworks = { error: (err as Error).message };
      }
    }
  }

  /**
   * The path MTUs the host learned toward its peers (ICMP "fragmentation needed" for the gateway's UDP
   * 4500 datagrams, RFC 1191). Datagrams over one are fragmented by this host, not lost, unless the path
   * drops fragments: each change is logged, so the operator can set --mtu on every host.
   */
  async #refreshPathMtus(read: (addresses: readonly string[]) => Promise<Map<string, number>>): Promise<void> {
    const addresses = [...new Set([...this.#peers.values()].map((p) => p.address))];
    let now: Map<string, number>;
    try {
      now = await read(addresses);
      this.#pathMtuError = undefined;
    } catch (err) {
      this.#pathMtuError = (err as Error).message;
      return;
    }
    const peersAt = (address: string) =>
      [...this.#peers.values()].filter((p) => p.address === address).map((p) => p.id);
    for (const [address, mtu] of now)
      if (this.#pathMtus.get(address) !== mtu)
        this.#warn('path MTU toward a peer is below the underlay MTU: larger datagrams are fragmented on the way', {
          peers: peersAt(address),
          address,
          pathMtu: mtu,
          ...(this.options.underlayMtu ? { underlayMtu: this.options.underlayMtu.mtu } : {}),
          hint: `set --mtu ${mtu} on every host`,
        });
    for (const address of this.#pathMtus.keys())
      if (!now.has(address)) this.#log('path MTU toward a peer is the underlay MTU again', { address });
    this.#pathMtus = now;
  }

  status(): GatewayStatus {
    // Every configured (peer, network) pair, idle ones included (both data paths list them), and any
    // pair that still has counters (a peer or network since removed).
    const traffic = this.options.dataPath.status();
    const underlayMtu = this.options.underlayMtu;
    return {
      host: this.options.self.id,
      ...(underlayMtu
        ? { underlay: { address: this.options.self.address, mtu: underlayMtu.mtu, mtuFrom: underlayMtu.from } }
        : {}),
      peers: [...this.#peers.values()].map((p) => {
        const pathMtu = this.#pathMtus.get(p.address);
        return { id: p.id, address: p.address, gateway: this.#gateway(p), ...(pathMtu ? { pathMtu } : {}) };
      }),
      ...(this.#pathMtuError ? { pathMtuError: this.#pathMtuError } : {}),
      networks: [...this.#networks.values()].map((n) => {
        const vtep = this.#vteps.get(n.vni);
        if (!vtep) return n;
        return {
          ...n,
          vtep: vtep.kind === 'tap' ? { ...vtep, macs: this.#tapMacs.get(n.vni)?.size ?? 0 } : { ...vtep },
        };
      }),
      pairs: traffic.pairs,
      unattributedDrops: traffic.unattributedDrops,
      sendFailures: traffic.sendFailures,
      tables: traffic.tables,
      ...(this.#vtepFirewall ? { vtepFirewall: this.#vtepFirewall } : {}),
      ...(this.#portSecurity ? { portSecurity: this.#portSecurity } : {}),
      ...(this.#plainNetworks ? { plainNetworks: this.#plainNetworks } : {}),
    };
  }

  #log(event: string, fields?: Record<string, unknown>): void {
    this.options.log?.(event, fields);
  }

  #warn(event: string, fields?: Record<string, unknown>): void {
    this.options.log?.(event, fields, 'warn');
  }
}

function samePeer(a: GatewayPeer, b: GatewayPeer): boolean {
  return (
    a.index === b.index &&
    a.address === b.address &&
    a.incarnation === b.incarnation &&
    a.encrypts === b.encrypts &&
    bytesEqual(a.publicKey, b.publicKey)
  );
}

const hex = (spi: number) => `0x${spi.toString(16).padStart(8, '0')}`;
