import type { SecretKey } from '../crypto/secret.js';
import type { DropReason } from './drops.js';
import type { PairStatus } from './gateway.js';

/*
 * The gateway's two I/O seams (as wireguard-go keeps its TUN and its UDP bind
 * behind two interfaces). Implementations: node:dgram (io-dgram.ts); unit tests
 * can drive the Forwarder directly without either.
 */

export type UnderlayEspHandler = (datagram: Uint8Array, address: string, port: number) => void;
export type UnderlayPlainHandler = (datagram: Uint8Array, address: string, port: number) => void;
export type VtepHandler = (datagram: Uint8Array, address: string, port: number) => void;

/** The underlay side: UDP 4500 (ESP, RFC 3948) and UDP 4789 (plain VXLAN) on the host's underlay address. */
export interface UnderlayIo {
  open(onEsp: UnderlayEspHandler, onPlain: UnderlayPlainHandler): Promise<void>;
  /** Sends from port 4500 (ESP) or 4789 (VXLAN), as `port` says. Never throws: returns false when it could not send. */
  send(datagram: Uint8Array, address: string, port: number): boolean;
  close(): Promise<void>;
}

/** The VTEP side: one gateway port per peer receives what the FDB sends that peer's way; delivery goes to the VTEP's 4789. */
export interface VtepIo {
  open(): Promise<void>;
  addPeer(peerId: string, port: number, onDatagram: VtepHandler): Promise<void>;
  removePeer(peerId: string): Promise<void>;
  deliver(datagram: Uint8Array): boolean;
  close(): Promise<void>;
}

// ---- the data-path seam: the Gateway drives TsDataPath (data-path-ts.ts) or NativeDataplane (io-native.ts) ----

/** One SA as key derivation hands it to a data path: KEYMAT (key || salt) and where it belongs. */
export interface SaKeySpec {
  readonly spi: number;
  readonly keymat: SecretKey;
  readonly esn: boolean;
  readonly vni: number;
  readonly peerId: string;
  readonly epoch: number;
}

export interface DataPathPeer {
  readonly id: string;
  readonly index: number;
  readonly address: string;
}

export interface DataPathNetwork {
  readonly vni: number;
  readonly encrypted: boolean;
}

/** What Gateway.status() reports about traffic (the rest it knows itself). */
export interface DataPathStatus {
  pairs: PairStatus[];
  unattributedDrops: Partial<Record<DropReason, number>>;
  sendFailures: number;
}

/**
 * The seam the Gateway drives: implemented by the TypeScript path (Forwarder +
 * DgramUnderlay + DgramVtep) and by NativeDataplane. Table changes are
 * synchronous and take effect for the next datagram.
 */
export interface DataPath {
  start(): Promise<void>;
  stop(): Promise<void>;
  setNetwork(network: DataPathNetwork): void;
  removeNetwork(vni: number): void;
  /** Opens the peer's gateway port (hostAddress:port) and accepts plain VXLAN from its address. */
  addPeer(peer: DataPathPeer, port: number): Promise<void>;
  removePeer(peerId: string): Promise<void>;
  installInbound(sa: SaKeySpec): void;
  /** Makes `sa` the one outbound SA of its (peer, network); `sequenceBudget` caps its sequence numbers. */
  activateOutbound(sa: SaKeySpec, sequenceBudget?: number): void;
  retireInbound(peerId: string, vni: number, epoch: number): void;
  removeOutbound(peerId: string, vni: number): void;
  status(): DataPathStatus;
}
