import type { SecretKey } from '../crypto/secret.js';
import type { DropReason } from './wire/drops.js';

/*
 * The data-path seam (docs/architecture.md "Data paths"). The Gateway drives one DataPath:
 * TsDataPath (ts/, the reference) or NativeDataPath (native/, the default). This file owns
 * every type that crosses the seam; the implementations import it and nothing above it.
 */

/** A network as the data path sees it. */
export interface DataPathNetwork {
  readonly vni: number;
  readonly encrypted: boolean;
}

/** A remote gateway: its id, its host index (the SPI's sender field) and its underlay address. */
export interface DataPathPeer {
  readonly id: string;
  readonly index: number;
  readonly address: string;
}

/** One SA as key derivation hands it to a data path: KEYMAT (key || salt) and where it belongs. */
export interface SaKeySpec {
  readonly spi: number;
  readonly keymat: SecretKey;
  readonly esn: boolean;
  readonly vni: number;
  readonly peerId: string;
  readonly epoch: number;
}

/** Traffic and SAs of one (peer, network) pair. */
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

/** What Gateway.status() reports about traffic (the rest it knows itself). */
export interface DataPathStatus {
  pairs: PairStatus[];
  unattributedDrops: Partial<Record<DropReason, number>>;
  sendFailures: number;
  tables: DataPathTables;
}

/** How many entries the data path's tables hold: what a long-running gateway must not let grow. */
export interface DataPathTables {
  /** (peer, network) pairs with counters: every configured one, and removed peers' (a removed network's go). */
  pairs: number;
  inboundSas: number;
  outboundSas: number;
  /** SAs out of service, remembered so the same key resumes (docs/wire.md "Sequence numbers and replay"). */
  retiredSas: number;
}

/**
 * The seam the Gateway drives. Table changes are synchronous and take effect for the next
 * datagram. Installing the same key again never restarts its sequence counter or its replay
 * window (docs/wire.md "Sequence numbers and replay").
 */
export interface DataPath {
  start(): Promise<void>;
  stop(): Promise<void>;
  setNetwork(network: DataPathNetwork): void;
  removeNetwork(vni: number): void;
  /**
   * Takes what the VTEP sends to the peer's gateway address (peer net + its index, docs/plumbing.md
   * "Gateway addresses") toward it, and accepts plain VXLAN from its underlay address.
   */
  addPeer(peer: DataPathPeer): Promise<void>;
  removePeer(peerId: string): Promise<void>;
  installInbound(sa: SaKeySpec): void;
  /** Makes `sa` the one outbound SA of its (peer, network); `sequenceBudget` caps its sequence numbers. */
  activateOutbound(sa: SaKeySpec, sequenceBudget?: number): void;
  retireInbound(peerId: string, vni: number, epoch: number): void;
  removeOutbound(peerId: string, vni: number): void;
  status(): DataPathStatus;
  /** An encrypted network's TAP port, where the data path can make one (the native path). */
  readonly tapPort?: TapPort;
}

/**
 * An encrypted network's TAP port (docs/plumbing.md "The TAP port"): its bridge hands the data path
 * whole frames, and the data path, not a kernel VXLAN device, finds the peer of each destination MAC.
 */
export interface TapPort {
  /** Makes the network's TAP port in the namespace at netnsPath (idempotent); whether the kernel took its offloads. */
  attach(vni: number, netnsPath: string, name: string): { offloads: boolean };
  detach(vni: number): void;
  /** Frames for mac go to this peer only; replaces the MAC's previous peer. */
  setMac(vni: number, mac: string, peerId: string): void;
  removeMac(vni: number, mac: string): void;
  /** Frames for group and unknown MACs go to every peer added here, as a kernel VTEP's flood entries. */
  addFlood(vni: number, peerId: string): void;
  removeFlood(vni: number, peerId: string): void;
}
