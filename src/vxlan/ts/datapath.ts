import type { AeadProvider } from '../../crypto/aead.js';
import { SecretKey } from '../../crypto/secret.js';
import { createEspCipher } from '../wire/esp.js';
import { Forwarder, type Forward } from './forwarder.js';
import type { DataPath, DataPathNetwork, DataPathPeer, DataPathStatus, PairStatus, SaKeySpec } from '../datapath.js';
import type { UnderlayIo, VtepIo } from './io.js';
import { InboundSa, OutboundSa } from '../sa/sa.js';

export interface TsDataPathOptions {
  /** 169.254.x.2: the only source the Forwarder accepts on the gateway ports. */
  readonly vtepAddress: string;
  readonly underlay: UnderlayIo;
  readonly vtep: VtepIo;
  readonly provider: AeadProvider;
  readonly replayWindow?: number;
}

/** The TypeScript data path: the Forwarder's decisions between node:dgram sockets (or any UnderlayIo/VtepIo). */
export class TsDataPath implements DataPath {
  readonly forwarder: Forwarder;
  /**
   * The SAs made so far, by (direction, peer, VNI, epoch, SPI), with a copy of their KEYMAT. Installing
   * the same key again reuses the SA: a fresh OutboundSa would restart its sequence (and so its GCM
   * nonces) at 1 under a key already used, a fresh InboundSa would forget its replay window. A new
   * key under the same name (a peer's new incarnation) replaces the SA.
   */
  readonly #made = new Map<string, { keymat: SecretKey; sa: InboundSa | OutboundSa }>();
  #sendFailures = 0;
  #running = false;

  constructor(readonly options: TsDataPathOptions) {
    this.forwarder = new Forwarder(options.vtepAddress);
  }

  async start(): Promise<void> {
    const { underlay, vtep } = this.options;
    await vtep.open();
    await underlay.open(
      (d) => this.#forward(this.forwarder.inboundEsp(d)),
      (d, address) => this.#forward(this.forwarder.inboundPlain(d, address)),
    );
    this.#running = true;
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.options.vtep.close();
    await this.options.underlay.close();
  }

  setNetwork(network: DataPathNetwork): void {
    this.forwarder.setNetwork(network);
  }

  removeNetwork(vni: number): void {
    this.forwarder.removeNetwork(vni);
  }

  async addPeer(peer: DataPathPeer, port: number): Promise<void> {
    this.forwarder.setPeer({ id: peer.id, address: peer.address });
    await this.options.vtep.addPeer(peer.id, port, (d, address, srcPort) =>
      this.#forward(this.forwarder.outbound(peer.id, d, address, srcPort)),
    );
  }

  async removePeer(peerId: string): Promise<void> {
    await this.options.vtep.removePeer(peerId);
    this.forwarder.removePeer(peerId);
  }

  installInbound(sa: SaKeySpec): void {
    this.forwarder.sas.installInbound(
      this.#make('in', sa, (cipher, label) => new InboundSa(cipher, sa.vni, this.options.replayWindow, label)),
    );
  }

  activateOutbound(sa: SaKeySpec, sequenceBudget?: number): void {
    this.forwarder.sas.activateOutbound(
      this.#make('out', sa, (cipher, label) => new OutboundSa(cipher, sa.vni, sequenceBudget, label)),
    );
  }

  #make<T extends InboundSa | OutboundSa>(
    direction: 'in' | 'out',
    spec: SaKeySpec,
    create: (cipher: ReturnType<typeof createEspCipher>, label: { peerId: string; epoch: number }) => T,
  ): T {
    const name = `${direction}/${spec.peerId}/${spec.vni}/${spec.epoch}/${spec.spi}`;
    const made = this.#made.get(name);
    if (made?.keymat.equals(spec.keymat)) return made.sa as T;
    made?.keymat.wipe();
    const sa = create(createEspCipher(spec.spi, spec.keymat, spec.esn, this.options.provider), {
      peerId: spec.peerId,
      epoch: spec.epoch,
    });
    this.#made.set(name, { keymat: new SecretKey(spec.keymat.exposeDanger()), sa });
    // At most three epochs of a pair are live: forget what is older.
    for (const [key, entry] of this.#made) {
      if (entry.sa.label.peerId === spec.peerId && entry.sa.vni === spec.vni && entry.sa.label.epoch < spec.epoch - 2) {
        entry.keymat.wipe();
        this.#made.delete(key);
      }
    }
    return sa;
  }

  retireInbound(peerId: string, vni: number, epoch: number): void {
    this.forwarder.sas.retireInbound(peerId, vni, epoch);
  }

  removeOutbound(peerId: string, vni: number): void {
    this.forwarder.sas.removeOutbound(peerId, vni);
  }

  status(): DataPathStatus {
    // Every configured (peer, network) pair, idle ones included: "is it encrypted?" needs an answer
    // before the first packet; then any pair that still has counters (a peer or network since removed).
    for (const peer of this.forwarder.peers())
      for (const network of this.forwarder.networks()) this.forwarder.stats.pair(peer.id, network.vni);
    const sas = this.forwarder.sas;
    const encrypted = new Map(this.forwarder.networks().map((n) => [n.vni, n.encrypted]));
    const pairs = this.forwarder.stats.entries().map(({ peerId, vni, stats }) => {
      const out = sas.outbound(peerId, vni);
      const pair: PairStatus = {
        peer: peerId,
        vni,
        encrypted: encrypted.get(vni) ?? false,
        txPackets: stats.txPackets,
        txBytes: stats.txBytes,
        rxPackets: stats.rxPackets,
        rxBytes: stats.rxBytes,
        drops: stats.drops.snapshot(),
        inbound: sas
          .inboundOf(peerId, vni)
          .map((sa) => ({ spi: sa.spi, epoch: sa.label.epoch, opened: sa.counters.packets })),
      };
      if (out)
        pair.outbound = {
          spi: out.spi,
          epoch: out.label.epoch,
          sealed: out.counters.packets,
          sequenceHeadroom: out.counter.remaining,
        };
      return pair;
    });
    return { pairs, unattributedDrops: this.forwarder.stats.unattributed.snapshot(), sendFailures: this.#sendFailures };
  }

  #forward(result: Forward): void {
    if (!result.ok || !this.#running) return;
    const sent =
      result.to === 'vtep'
        ? this.options.vtep.deliver(result.datagram)
        : this.options.underlay.send(result.datagram, result.address, result.port);
    if (!sent) {
      this.#sendFailures++;
      this.forwarder.unattributed('send-failed');
    }
  }
}
