import { VeilError } from '../../errors.js';
import {
  ESP_IN_UDP_PORT,
  ESP_SALT_LENGTH,
  VTEP_DELIVERY_PORT,
  VTEP_GATEWAY_PORT,
  VXLAN_PORT,
} from '../wire/constants.js';
import { gcmAlgorithmForKeymat } from '../wire/esp.js';
import type {
  DataPath,
  DataPathNetwork,
  DataPathPeer,
  DataPathStatus,
  PairStatus,
  SaKeySpec,
  TapPort,
} from '../datapath.js';
import type { DropReason } from '../wire/drops.js';
import { loadNative, type NativeAddon, type NativeHandle, type NativeSaSpec, type NativeStats } from './addon.js';

/*
 * The native data path behind the gateway's data-path seam: the Forwarder's
 * decisions, the ESP codec and the UDP I/O of ts/dgram.ts, done by two threads
 * in native/dataplane.c with recvmmsg/sendmmsg, UDP GSO and GRO.
 *
 *   outbound thread: an encrypted network's TAP port (tapPort, docs/plumbing.md "The TAP port"), or the gateway
 *                    socket (*:1021 on the vtep link, the destination names the peer) → seal → UDP 4500 → peer
 *   inbound thread:  UDP 4500 → open → the network's TAP port, or vtepAddress:4789;  UDP 4789 (plain networks)
 *                    → vtepAddress:4789, always from hostAddress:1022 (VTEP_DELIVERY_PORT: the only source
 *                    the VTEP accepts)
 *
 * The same decisions and drop names as forwarder.ts/inbound.ts, in the same order;
 * the tables below are mirrors of what was installed, for status() and for
 * mapping peer ids to the host indexes the C side keys everything by.
 */

export interface NativeDataPathOptions {
  /** The underlay address: UDP 4500 (ESP) and 4789 (plain VXLAN, with relayPlain) are bound on it. */
  readonly underlayAddress: string;
  /** 169.254.x.1: deliveries to the VTEP leave from it. */
  readonly hostAddress: string;
  /** 169.254.x.2: the only source accepted at the gateway addresses, and where inbound VXLAN goes (port 4789). */
  readonly vtepAddress: string;
  /** The peer net: a datagram to its address + i is peer i's (src/model/peer-net.ts). */
  readonly peerNet: string;
  /** The host end of the vtep link: the gateway socket hears nothing from elsewhere (none: any, for tests). */
  readonly gatewayDevice?: string;
  readonly underlayMtu?: number;
  /** UDP_SEGMENT on send (default on). */
  readonly gso?: boolean;
  /** UDP_GRO on receive (default on). */
  readonly gro?: boolean;
  /**
   * Whether plain networks pass through this data path (default true). False where they run in the
   * kernel (docs/plumbing.md "Plain networks"): UDP 4789 is not bound and a plain network is refused.
   */
  readonly relayPlain?: boolean;
  /** SO_RCVBUF/SO_SNDBUF (default 4 MiB, forced past rmem_max when root). */
  readonly bufferBytes?: number;
  readonly replayWindow?: number;
  /** How long one flush may wait for the underlay in all before it drops the rest as send-failed (default 100 ms). */
  readonly sendWaitMs?: number;
  /**
   * Ports, for tests on loopback; the defaults are the protocol's, and `delivery` (the source port
   * of what goes to the VTEP) is VTEP_DELIVERY_PORT, which the vtep namespace's firewall requires.
   */
  readonly ports?: {
    esp?: number;
    plain?: number;
    vtep?: number;
    peerEsp?: number;
    peerPlain?: number;
    delivery?: number;
    gateway?: number;
  };
}

interface InstalledInbound {
  readonly peerId: string;
  readonly vni: number;
  readonly epoch: number;
}

export class NativeDataPathError extends VeilError {
  override readonly name = 'NativeDataPathError';
  constructor(code: 'VEIL_ERR_NATIVE_NOT_RUNNING' | 'VEIL_ERR_NATIVE_UNKNOWN_PEER', detail: string) {
    super(code, detail);
  }
}

export class NativeDataPath implements DataPath {
  readonly #addon: NativeAddon;
  #dp: NativeHandle<'dp'> | undefined;
  readonly #peers = new Map<string, DataPathPeer>();
  readonly #peerIds = new Map<number, string>();
  /** Ids of removed peers: their pairs keep their counters in status(), as the TypeScript path's do. */
  readonly #removedPeerIds = new Map<number, string>();
  readonly #networks = new Map<number, DataPathNetwork>();
  readonly #inbound = new Map<number, InstalledInbound>();

  constructor(readonly options: NativeDataPathOptions) {
    this.#addon = loadNative();
  }

  /** Binds the underlay and delivery sockets (throws if a port is taken) and starts both threads. */
  async start(): Promise<void> {
    if (this.#dp) return;
    const o = this.options;
    const dp = this.#addon.dpCreate({
      underlayAddress: o.underlayAddress,
      hostAddress: o.hostAddress,
      vtepAddress: o.vtepAddress,
      peerNet: o.peerNet,
      ...(o.gatewayDevice !== undefined ? { gatewayDevice: o.gatewayDevice } : {}),
      gatewayPort: o.ports?.gateway ?? VTEP_GATEWAY_PORT,
      espPort: o.ports?.esp ?? ESP_IN_UDP_PORT,
      plainPort: o.ports?.plain ?? VXLAN_PORT,
      vtepPort: o.ports?.vtep ?? VXLAN_PORT,
      peerEspPort: o.ports?.peerEsp ?? ESP_IN_UDP_PORT,
      peerPlainPort: o.ports?.peerPlain ?? VXLAN_PORT,
      deliveryPort: o.ports?.delivery ?? VTEP_DELIVERY_PORT,
      ...(o.underlayMtu !== undefined ? { underlayMtu: o.underlayMtu } : {}),
      ...(o.gso !== undefined ? { gso: o.gso } : {}),
      ...(o.gro !== undefined ? { gro: o.gro } : {}),
      ...(o.relayPlain !== undefined ? { relayPlain: o.relayPlain } : {}),
      ...(o.bufferBytes !== undefined ? { bufferBytes: o.bufferBytes } : {}),
      ...(o.replayWindow !== undefined ? { replayWindow: o.replayWindow } : {}),
      ...(o.sendWaitMs !== undefined ? { sendWaitMs: o.sendWaitMs } : {}),
    });
    try {
      this.#addon.dpStart(dp);
    } catch (err) {
      this.#addon.dpClose(dp);
      throw err;
    }
    this.#dp = dp;
  }

  /** Stops and joins the threads, closes every socket and frees every SA (keys included). */
  async stop(): Promise<void> {
    const dp = this.#dp;
    this.#dp = undefined;
    if (dp) this.#addon.dpClose(dp);
    this.#peers.clear();
    this.#peerIds.clear();
    this.#removedPeerIds.clear();
    this.#networks.clear();
    this.#inbound.clear();
  }

  get running(): boolean {
    return this.#dp !== undefined;
  }

  setNetwork(network: DataPathNetwork): void {
    this.#addon.dpSetNetwork(this.#handle(), network.vni, network.encrypted);
    this.#networks.set(network.vni, { vni: network.vni, encrypted: network.encrypted });
  }

  /** Also removes the network's SAs (as Forwarder.removeNetwork does). */
  removeNetwork(vni: number): void {
    this.#addon.dpRemoveNetwork(this.#handle(), vni);
    this.#networks.delete(vni);
    for (const [spi, sa] of this.#inbound) if (sa.vni === vni) this.#inbound.delete(spi);
  }

  async addPeer(peer: DataPathPeer): Promise<void> {
    const dp = this.#handle();
    const old = this.#peerIds.get(peer.index);
    if (old !== undefined && old !== peer.id) await this.removePeer(old);
    this.#addon.dpAddPeer(dp, peer.index, peer.address);
    this.#peers.set(peer.id, { id: peer.id, index: peer.index, address: peer.address });
    this.#peerIds.set(peer.index, peer.id);
    this.#removedPeerIds.delete(peer.index);
  }

  /** Retires its SAs; its gateway address names nobody until the index is added again. */
  async removePeer(peerId: string): Promise<void> {
    const peer = this.#peers.get(peerId);
    if (!peer) return;
    this.#addon.dpRemovePeer(this.#handle(), peer.index);
    this.#peers.delete(peerId);
    this.#peerIds.delete(peer.index);
    this.#removedPeerIds.set(peer.index, peerId);
    for (const [spi, sa] of this.#inbound) if (sa.peerId === peerId) this.#inbound.delete(spi);
  }

  installInbound(sa: SaKeySpec): void {
    this.#addon.dpInstallInbound(this.#handle(), this.#spec(sa));
    this.#inbound.set(sa.spi, { peerId: sa.peerId, vni: sa.vni, epoch: sa.epoch });
  }

  activateOutbound(sa: SaKeySpec, sequenceBudget?: number): void {
    this.#addon.dpSetOutbound(this.#handle(), {
      ...this.#spec(sa),
      ...(sequenceBudget !== undefined ? { budget: sequenceBudget } : {}),
    });
  }

  retireInbound(peerId: string, vni: number, epoch: number): void {
    const dp = this.#handle();
    for (const [spi, sa] of this.#inbound) {
      if (sa.peerId !== peerId || sa.vni !== vni || sa.epoch !== epoch) continue;
      this.#addon.dpRemoveInbound(dp, spi);
      this.#inbound.delete(spi);
    }
  }

  removeOutbound(peerId: string, vni: number): void {
    const peer = this.#peers.get(peerId);
    if (peer) this.#addon.dpRemoveOutbound(this.#handle(), peer.index, vni);
  }

  /** The addon's raw counters (peer indexes, I/O figures). */
  stats(): NativeStats {
    return this.#addon.dpStats(this.#handle());
  }

  /**
   * The same shape as the TypeScript path's status, so the API and metrics need no change: every
   * (peer, network) pair, idle ones included, and pairs of removed peers with their counters (a removed
   * network's pairs go with it).
   */
  status(): DataPathStatus {
    if (!this.#dp)
      return {
        pairs: [],
        unattributedDrops: {},
        sendFailures: 0,
        tables: { pairs: 0, inboundSas: 0, outboundSas: 0, retiredSas: 0 },
      };
    const raw = this.stats();
    const inboundOf = new Map<string, PairStatus['inbound']>();
    for (const sa of raw.inbound) {
      const key = `${sa.peer}/${sa.vni}`;
      const list = inboundOf.get(key) ?? [];
      list.push({ spi: sa.spi, epoch: sa.epoch, opened: sa.opened });
      inboundOf.set(key, list);
    }
    // One pair per (peer id, network), as the TypeScript path keys them: a peer renumbered (another host
    // index, same id) has its counters under each index it had.
    const pairs = new Map<string, PairStatus>();
    for (const p of raw.pairs) {
      const peerId = this.#peerIds.get(p.peer) ?? this.#removedPeerIds.get(p.peer);
      if (peerId === undefined) continue;
      const key = `${peerId}/${p.vni}`;
      const pair = pairs.get(key) ?? {
        peer: peerId,
        vni: p.vni,
        encrypted: this.#networks.get(p.vni)?.encrypted ?? false,
        txPackets: 0,
        txBytes: 0,
        rxPackets: 0,
        rxBytes: 0,
        drops: {},
        inbound: [],
      };
      pair.txPackets += p.txPackets;
      pair.txBytes += p.txBytes;
      pair.rxPackets += p.rxPackets;
      pair.rxBytes += p.rxBytes;
      for (const [reason, n] of Object.entries(p.drops) as Array<[DropReason, number]>)
        pair.drops[reason] = (pair.drops[reason] ?? 0) + n;
      pair.inbound.push(...(inboundOf.get(`${p.peer}/${p.vni}`) ?? []));
      if (p.outbound) pair.outbound = { ...p.outbound };
      pairs.set(key, pair);
    }
    for (const pair of pairs.values()) pair.inbound.sort((a, b) => a.epoch - b.epoch);
    return {
      pairs: [...pairs.values()],
      unattributedDrops: raw.unattributed,
      sendFailures: raw.unattributed['send-failed'] ?? 0,
      tables: {
        pairs: raw.pairs.length,
        inboundSas: raw.inbound.length,
        outboundSas: raw.pairs.filter((p) => p.outbound).length,
        retiredSas: raw.retired.inbound + raw.retired.outbound,
      },
    };
  }

  readonly tapPort: TapPort = {
    attach: (vni, netnsPath, name) => ({ offloads: this.#addon.dpAttachTap(this.#handle(), vni, netnsPath, name) }),
    detach: (vni) => this.#addon.dpDetachTap(this.#handle(), vni),
    setMac: (vni, mac, peerId) => this.#addon.dpFdbSet(this.#handle(), vni, mac, this.#index(peerId)),
    removeMac: (vni, mac) => this.#addon.dpFdbRemove(this.#handle(), vni, mac),
    addFlood: (vni, peerId) => this.#addon.dpFloodAdd(this.#handle(), vni, this.#index(peerId)),
    removeFlood: (vni, peerId) => {
      const peer = this.#peers.get(peerId);
      if (peer) this.#addon.dpFloodRemove(this.#handle(), vni, peer.index);
    },
  };

  #index(peerId: string): number {
    const peer = this.#peers.get(peerId);
    if (!peer) throw new NativeDataPathError('VEIL_ERR_NATIVE_UNKNOWN_PEER', `no peer ${peerId}`);
    return peer.index;
  }

  #handle(): NativeHandle<'dp'> {
    if (!this.#dp) throw new NativeDataPathError('VEIL_ERR_NATIVE_NOT_RUNNING', 'start() it first');
    return this.#dp;
  }

  #spec(sa: SaKeySpec): NativeSaSpec {
    const peer = this.#peers.get(sa.peerId);
    if (!peer)
      throw new NativeDataPathError(
        'VEIL_ERR_NATIVE_UNKNOWN_PEER',
        `SA 0x${sa.spi.toString(16)} names unknown peer ${sa.peerId}`,
      );
    if (!gcmAlgorithmForKeymat(sa.keymat.length))
      throw new RangeError(`ESP KEYMAT must be 20, 28 or 36 bytes, got ${sa.keymat.length}`);
    const bytes = sa.keymat.exposeDanger();
    const keyLength = bytes.length - ESP_SALT_LENGTH;
    // The addon copies the key into its cipher context; these views are not kept.
    return {
      spi: sa.spi,
      key: bytes.subarray(0, keyLength),
      salt: bytes.subarray(keyLength),
      esn: sa.esn,
      vni: sa.vni,
      peer: peer.index,
      epoch: sa.epoch,
    };
  }
}
