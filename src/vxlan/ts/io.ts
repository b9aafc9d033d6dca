/*
 * The TypeScript data path's two I/O seams, as wireguard-go keeps its TUN and its UDP bind behind
 * two interfaces. Implementations: node:dgram (dgram.ts) and an in-memory wire (io-memory.ts).
 */

export type UnderlayEspHandler = (datagram: Uint8Array, address: string, port: number) => void;
export type UnderlayPlainHandler = (datagram: Uint8Array, address: string, port: number) => void;
export type VtepHandler = (datagram: Uint8Array, address: string, port: number) => void;

/**
 * The underlay side: UDP 4500 (ESP, RFC 3948) and UDP 4789 (plain VXLAN) on the host's underlay address.
 * Without `onPlain` 4789 is left alone: plain networks run in the kernel (docs/plumbing.md "Plain networks").
 */
export interface UnderlayIo {
  open(onEsp: UnderlayEspHandler, onPlain?: UnderlayPlainHandler): Promise<void>;
  /** Sends from port 4500 (ESP) or 4789 (VXLAN), as `port` says. Never throws: returns false when it could not send. */
  send(datagram: Uint8Array, address: string, port: number): boolean;
  close(): Promise<void>;
}

/**
 * The VTEP side: each peer's gateway address (VTEP_GATEWAY_PORT on it) receives what the FDB sends that
 * peer's way; delivery goes to the VTEP's 4789.
 */
export interface VtepIo {
  open(): Promise<void>;
  addPeer(peerId: string, gateway: string, onDatagram: VtepHandler): Promise<void>;
  removePeer(peerId: string): Promise<void>;
  deliver(datagram: Uint8Array): boolean;
  close(): Promise<void>;
}
