import type { DataPath, DataPathNetwork, DataPathPeer, DataPathStatus, SaKeySpec, TapPort } from './datapath.js';

/*
 * A DataPath that moves no packets: it records what the Gateway asked of it, per peer, and
 * fails on demand. For unit tests of the gateway and the agent (docs/testing.md "Tiers").
 */
export class RecordingDataPath implements DataPath {
  readonly networks = new Map<number, DataPathNetwork>();
  /** Peer id → its host index. */
  readonly peers = new Map<string, number>();
  /** Peer id → epochs with an inbound SA installed. */
  readonly inbound = new Map<string, number[]>();
  /** Peer id → the epoch its outbound SA seals with. */
  readonly outbound = new Map<string, number>();
  /** installInbound fails for these peers. */
  readonly failInboundFor = new Set<string>();
  /** addPeer fails (as the native table does out of memory) for these peers. */
  readonly failAddFor = new Set<string>();
  /** Peer id → packets received from it (a test moves these to stand for traffic). */
  readonly rxPackets = new Map<string, number>();
  /** Peer id → packets that opened under its inbound SA (authenticated traffic; a test moves these). */
  readonly opened = new Map<string, number>();
  running = false;
  /** Absent, as on the TypeScript path; a test sets a RecordingTapPort to stand for the native one. */
  tapPort: RecordingTapPort | undefined;

  async start(): Promise<void> {
    this.running = true;
  }

  async stop(): Promise<void> {
    this.running = false;
  }

  setNetwork(network: DataPathNetwork): void {
    this.networks.set(network.vni, network);
  }

  removeNetwork(vni: number): void {
    this.networks.delete(vni);
  }

  async addPeer(peer: DataPathPeer): Promise<void> {
    if (this.failAddFor.has(peer.id)) throw new Error('VEIL_ERR_NATIVE_NOMEM: out of memory');
    this.peers.set(peer.id, peer.index);
  }

  async removePeer(peerId: string): Promise<void> {
    this.peers.delete(peerId);
    this.inbound.delete(peerId);
    this.outbound.delete(peerId);
  }

  installInbound(sa: SaKeySpec): void {
    if (this.failInboundFor.has(sa.peerId)) throw new Error('SA table full');
    const epochs = this.inbound.get(sa.peerId) ?? [];
    if (!epochs.includes(sa.epoch)) epochs.push(sa.epoch);
    this.inbound.set(sa.peerId, epochs);
  }

  activateOutbound(sa: SaKeySpec): void {
    this.outbound.set(sa.peerId, sa.epoch);
  }

  retireInbound(peerId: string, _vni: number, epoch: number): void {
    this.inbound.set(
      peerId,
      (this.inbound.get(peerId) ?? []).filter((e) => e !== epoch),
    );
  }

  removeOutbound(peerId: string): void {
    this.outbound.delete(peerId);
  }

  /** One pair per peer with an outbound SA or received packets, on the first network added. */
  status(): DataPathStatus {
    const vni = [...this.networks.keys()][0] ?? 0;
    const peers = new Set([...this.outbound.keys(), ...this.rxPackets.keys(), ...this.opened.keys()]);
    return {
      pairs: [...peers].map((peer) => {
        const epoch = this.outbound.get(peer);
        const rx = this.rxPackets.get(peer) ?? 0;
        return {
          ...{ peer, vni, encrypted: true, txPackets: 0, txBytes: 0, rxPackets: rx, rxBytes: 100 * rx, drops: {} },
          ...(epoch !== undefined ? { outbound: { spi: 0x1000, epoch, sealed: 1, sequenceHeadroom: 1 } } : {}),
          inbound: this.opened.has(peer) ? [{ spi: 0x2000, epoch: 1, opened: this.opened.get(peer)! }] : [],
        };
      }),
      unattributedDrops: {},
      sendFailures: 0,
      tables: { pairs: peers.size, inboundSas: this.opened.size, outboundSas: this.outbound.size, retiredSas: 0 },
    };
  }
}

/** A TapPort that makes no device: it keeps the ports, MACs and flood lists the Gateway set, and fails on demand. */
export class RecordingTapPort implements TapPort {
  /** vni → [namespace file, device name]. */
  readonly ports = new Map<number, [string, string]>();
  /** vni → MAC → peer id. */
  readonly macs = new Map<number, Map<string, string>>();
  /** vni → peer ids. */
  readonly flood = new Map<number, Set<string>>();
  /** attach throws this (as the native path does without /dev/net/tun). */
  failAttach: string | undefined;

  attach(vni: number, netnsPath: string, name: string): { offloads: boolean } {
    if (this.failAttach) throw new Error(this.failAttach);
    this.ports.set(vni, [netnsPath, name]);
    return { offloads: true };
  }

  detach(vni: number): void {
    this.ports.delete(vni);
  }

  setMac(vni: number, mac: string, peerId: string): void {
    this.macs.set(vni, (this.macs.get(vni) ?? new Map<string, string>()).set(mac, peerId));
  }

  removeMac(vni: number, mac: string): void {
    this.macs.get(vni)?.delete(mac);
  }

  addFlood(vni: number, peerId: string): void {
    this.flood.set(vni, (this.flood.get(vni) ?? new Set<string>()).add(peerId));
  }

  removeFlood(vni: number, peerId: string): void {
    this.flood.get(vni)?.delete(peerId);
  }
}
