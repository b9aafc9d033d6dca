import type { SecretKey } from '../crypto/secret.js';
import type { DropReason } from './drops.js';
import type { DataPath } from './io.js';
import type { Plumbing } from './plumbing.js';
import { deriveSaKeySpecs, type SaHost } from './sa-derive.js';
import { SPI_HOST_INDEX_MAX } from './spi.js';

/**
 * The gateway port on 169.254.x.1 that receives what the local VTEP sends toward
 * peer `index` (the FDB entry's port). Below Linux's ephemeral range (32768+), so
 * no outgoing socket takes it: 14790 .. 31172.
 */
export const PEER_PORT_BASE = 14789;
export function peerPort(peerIndex: number): number {
  if (!Number.isInteger(peerIndex) || peerIndex < 1 || peerIndex > SPI_HOST_INDEX_MAX) throw new RangeError(`peer index must be in 1..${SPI_HOST_INDEX_MAX}`);
  return PEER_PORT_BASE + peerIndex;
}

export interface GatewayPeer extends SaHost {
  readonly address: string;
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
  /** TsDataPath (Forwarder + node:dgram) or NativeDataplane (native/, config `dataPath: "native"`). */
  readonly dataPath: DataPath;
  readonly sequenceBudget?: number;
  readonly log?: (event: string, fields?: Record<string, unknown>) => void;
}

export interface PairStatus {
  peer: string;
  vni: number;
  encrypted: boolean;
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  drops: Partial<Record<DropReason, number>>;
  outbound?: { spi: number; epoch: number; sealed: number; sequenceHeadroom: number };
  inbound: Array<{ spi: number; epoch: number; opened: number }>;
}

export interface GatewayStatus {
  host: string;
  peers: Array<{ id: string; address: string }>;
  networks: GatewayNetwork[];
  pairs: PairStatus[];
  unattributedDrops: Partial<Record<DropReason, number>>;
  sendFailures: number;
}

/**
 * One host's data plane: plumbs the vtep namespace, bridges and VXLAN devices,
 * points the FDB at one gateway port per peer, derives the SAs, and hands
 * networks, peers and SAs to its data path (TypeScript or native).
 */
export class Gateway {
  readonly #networks = new Map<number, GatewayNetwork>();
  readonly #peers = new Map<string, GatewayPeer>();
  readonly #keys = new Map<number, NetworkEpochKey>();

  constructor(readonly options: GatewayOptions) {}

  async start(): Promise<void> {
    await this.options.plumbing.ensureHost();
    await this.options.dataPath.start();
    this.#log('gateway started', { host: this.options.self.id, address: this.options.self.address });
  }

  async stop(options: { unplumb?: boolean } = {}): Promise<void> {
    await this.options.dataPath.stop();
    if (options.unplumb) await this.options.plumbing.teardownHost();
    this.#log('gateway stopped', { unplumbed: options.unplumb ?? false });
  }

  async addNetwork(network: GatewayNetwork, key?: NetworkEpochKey): Promise<void> {
    await this.options.plumbing.ensureNetwork({ vni: network.vni, encrypted: network.encrypted });
    this.#networks.set(network.vni, network);
    this.options.dataPath.setNetwork(network);
    if (key) this.#keys.set(network.vni, key);
    for (const peer of this.#peers.values()) await this.#connect(peer, network);
    this.#log('network added', { vni: network.vni, encrypted: network.encrypted, epoch: key?.epoch });
  }

  async removeNetwork(vni: number): Promise<void> {
    this.options.dataPath.removeNetwork(vni);
    this.#networks.delete(vni);
    this.#keys.delete(vni);
    await this.options.plumbing.removeNetwork(vni);
    this.#log('network removed', { vni });
  }

  async addPeer(peer: GatewayPeer): Promise<void> {
    this.#peers.set(peer.id, peer);
    await this.options.dataPath.addPeer({ id: peer.id, index: peer.index, address: peer.address }, peerPort(peer.index));
    for (const network of this.#networks.values()) await this.#connect(peer, network);
    this.#log('peer added', { peer: peer.id, address: peer.address, port: peerPort(peer.index) });
  }

  async removePeer(peerId: string): Promise<void> {
    const peer = this.#peers.get(peerId);
    if (!peer) return;
    for (const network of this.#networks.values()) await this.options.plumbing.removePeer(network.vni, peerPort(peer.index));
    await this.options.dataPath.removePeer(peerId);
    this.#peers.delete(peerId);
    this.#log('peer removed', { peer: peerId });
  }

  /** Flood entry for the peer, and (encrypted networks) both SAs of the current epoch. */
  async #connect(peer: GatewayPeer, network: GatewayNetwork): Promise<void> {
    await this.options.plumbing.ensurePeerFlood(network.vni, peerPort(peer.index));
    const key = this.#keys.get(network.vni);
    if (!network.encrypted) return;
    if (!key) {
      // Fail closed: frames toward this peer are dropped (no-outbound-sa) until keys arrive.
      this.#log('no keys for encrypted network; traffic is dropped until they arrive', { vni: network.vni, peer: peer.id });
      return;
    }
    const { outbound, inbound } = deriveSaKeySpecs(this.options.self, this.options.privateKey, peer, {
      networkId: network.id, networkIndex: network.index, vni: network.vni, epoch: key.epoch, secret: key.secret,
    });
    try {
      // Make-before-break order: inbound first (DESIGN "Rotation").
      this.options.dataPath.installInbound(inbound);
      this.options.dataPath.activateOutbound(outbound, this.options.sequenceBudget);
    } finally {
      // Each data path keeps its own copy of the key (a cipher context).
      inbound.keymat.wipe();
      outbound.keymat.wipe();
    }
    this.#log('SAs installed', { vni: network.vni, peer: peer.id, epoch: key.epoch, outboundSpi: hex(outbound.spi), inboundSpi: hex(inbound.spi) });
  }

  status(): GatewayStatus {
    // Every configured (peer, network) pair, idle ones included (both data paths list them), and any
    // pair that still has counters (a peer or network since removed).
    const traffic = this.options.dataPath.status();
    return {
      host: this.options.self.id,
      peers: [...this.#peers.values()].map((p) => ({ id: p.id, address: p.address })),
      networks: [...this.#networks.values()],
      pairs: traffic.pairs,
      unattributedDrops: traffic.unattributedDrops,
      sendFailures: traffic.sendFailures,
    };
  }

  #log(event: string, fields?: Record<string, unknown>): void {
    this.options.log?.(event, fields);
  }
}

const hex = (spi: number) => `0x${spi.toString(16).padStart(8, '0')}`;
