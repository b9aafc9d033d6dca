import type { DataPathNetwork, DataPathPeer } from '../datapath.js';

/** The forwarder needs a peer's id and underlay address only. */
type ForwarderPeer = Pick<DataPathPeer, 'id' | 'address'>;
import { ESP_IN_UDP_PORT, VXLAN_PORT } from '../wire/constants.js';
import type { DropReason } from '../wire/drops.js';
import { processInbound } from './inbound.js';
import { sealOutbound } from './outbound.js';
import { SaTable } from '../sa/table.js';
import { GatewayStats } from './stats.js';
import { parseVxlanHeader } from '../wire/vxlan.js';

/** Where a datagram goes: to a peer over the underlay, or to the local VTEP. */
export type Forward =
  | { ok: true; to: 'underlay'; address: string; port: number; datagram: Uint8Array }
  | { ok: true; to: 'vtep'; datagram: Uint8Array }
  | { ok: false; drop: DropReason };

/**
 * The gateway's decisions, free of I/O: which datagram goes where, sealed or
 * not, and why one is dropped. Every drop is counted here, against its (peer,
 * network) pair when known. Nothing here throws on data.
 */
export class Forwarder {
  readonly sas = new SaTable();
  readonly stats = new GatewayStats();
  readonly #networks = new Map<number, DataPathNetwork>();
  readonly #peers = new Map<string, ForwarderPeer>();
  readonly #peerByAddress = new Map<string, ForwarderPeer>();

  constructor(readonly vtepAddress: string) {}

  setNetwork(network: DataPathNetwork): void {
    this.#networks.set(network.vni, network);
  }

  removeNetwork(vni: number): void {
    this.#networks.delete(vni);
    this.sas.removeNetwork(vni);
    this.stats.removeNetwork(vni);
  }

  setPeer(peer: ForwarderPeer): void {
    const old = this.#peers.get(peer.id);
    if (old) this.#releaseAddress(old);
    this.#peers.set(peer.id, peer);
    this.#peerByAddress.set(peer.address, peer);
  }

  removePeer(peerId: string): void {
    const peer = this.#peers.get(peerId);
    if (peer) this.#releaseAddress(peer);
    this.#peers.delete(peerId);
    this.sas.removePeer(peerId);
  }

  /** A peer's address stops naming it, unless it names another peer now (a new host on the address of a cut-off one), as in native/satable.c. */
  #releaseAddress(peer: ForwarderPeer): void {
    if (this.#peerByAddress.get(peer.address)?.id === peer.id) this.#peerByAddress.delete(peer.address);
  }

  networks(): DataPathNetwork[] {
    return [...this.#networks.values()];
  }

  peers(): ForwarderPeer[] {
    return [...this.#peers.values()];
  }

  /**
   * Outbound: a VXLAN datagram the local VTEP sent to the gateway port of `peerId`
   * (the FDB chose the peer). Encrypted networks are sealed, plain ones forwarded
   * as standard VXLAN. Fail closed: an encrypted network without an SA drops.
   */
  outbound(peerId: string, vxlan: Uint8Array, srcAddress: string, srcPort: number): Forward {
    // Only the local VTEP may use the gateway ports (docs/plumbing.md "No local injection").
    if (srcAddress !== this.vtepAddress) return this.#dropUnattributed('unauthorized-source');
    const peer = this.#peers.get(peerId);
    if (!peer) return this.#dropUnattributed('unknown-peer');
    const header = parseVxlanHeader(vxlan);
    if (!header.ok) return this.#dropUnattributed(header.drop);
    const network = this.#networks.get(header.vni);
    if (!network) return this.#dropUnattributed('unknown-vni');
    const stats = this.stats.pair(peerId, header.vni);

    if (!network.encrypted) {
      stats.txPackets++;
      stats.txBytes += vxlan.length;
      return { ok: true, to: 'underlay', address: peer.address, port: VXLAN_PORT, datagram: vxlan };
    }
    const sealed = sealOutbound(vxlan, srcPort, this.sas.outbound(peerId, header.vni));
    if (!sealed.ok) {
      stats.drops.count(sealed.drop);
      return sealed;
    }
    stats.txPackets++;
    stats.txBytes += vxlan.length;
    return { ok: true, to: 'underlay', address: peer.address, port: ESP_IN_UDP_PORT, datagram: sealed.datagram };
  }

  /** Inbound on UDP 4500: ESP from a peer → the VXLAN datagram for the local VTEP. */
  inboundEsp(datagram: Uint8Array): Forward {
    const result = processInbound(datagram, this.sas);
    if (!result.ok) {
      if (result.sa) this.stats.pair(result.sa.label.peerId, result.sa.vni).drops.count(result.drop);
      else this.unattributed(result.drop);
      return result;
    }
    const stats = this.stats.pair(result.sa.label.peerId, result.vni);
    stats.rxPackets++;
    stats.rxBytes += result.vxlan.length;
    return { ok: true, to: 'vtep', datagram: result.vxlan };
  }

  /**
   * Inbound on UDP 4789: standard VXLAN from a peer (a veil gateway or a kernel
   * VTEP). Accepted only from known peers and only for plain networks: VXLAN
   * claiming an encrypted network's VNI is a downgrade and is dropped.
   */
  inboundPlain(datagram: Uint8Array, srcAddress: string): Forward {
    const peer = this.#peerByAddress.get(srcAddress);
    if (!peer) return this.#dropUnattributed('unknown-peer');
    const header = parseVxlanHeader(datagram);
    if (!header.ok) return this.#dropUnattributed(header.drop);
    const network = this.#networks.get(header.vni);
    if (!network) return this.#dropUnattributed('unknown-vni');
    const stats = this.stats.pair(peer.id, header.vni);
    if (network.encrypted) {
      stats.drops.count('plaintext-on-encrypted');
      return { ok: false, drop: 'plaintext-on-encrypted' };
    }
    stats.rxPackets++;
    stats.rxBytes += datagram.length;
    return { ok: true, to: 'vtep', datagram };
  }

  unattributed(drop: DropReason): void {
    this.stats.unattributed.count(drop);
  }

  #dropUnattributed(drop: DropReason): Forward {
    this.stats.unattributed.count(drop);
    return { ok: false, drop };
  }
}
