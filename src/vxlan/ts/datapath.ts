import { createHash } from 'node:crypto';
import type { AeadProvider } from '../../crypto/aead.js';
import type { SecretKey } from '../../crypto/secret.js';
import { createEspCipher } from '../wire/esp.js';
import { Forwarder, type Forward } from './forwarder.js';
import type { DataPath, DataPathNetwork, DataPathPeer, DataPathStatus, PairStatus, SaKeySpec } from '../datapath.js';
import type { UnderlayIo, VtepIo } from './io.js';
import { InboundSa, OutboundSa } from '../sa/sa.js';
import { EPOCH_REACH, SaTableError } from '../sa/table.js';
import { gatewayAddress } from '../../model/peer-net.js';

export interface TsDataPathOptions {
  /** 169.254.x.2: the only source the Forwarder accepts at the gateway addresses. */
  readonly vtepAddress: string;
  /** The peer net: peer i's gateway address is its address + i (src/model/peer-net.ts). */
  readonly peerNet: string;
  readonly underlay: UnderlayIo;
  readonly vtep: VtepIo;
  readonly provider: AeadProvider;
  readonly replayWindow?: number;
  /**
   * Whether plain networks pass through this data path (default true). False where they run in the
   * kernel (docs/plumbing.md "Plain networks"): UDP 4789 is not bound and a plain network is refused.
   */
  readonly relayPlain?: boolean;
}

/** An SA this data path made, in service or retired: its name and its key's fingerprint, never the key. */
interface Made {
  readonly direction: 'in' | 'out';
  readonly fingerprint: string;
  readonly spi: number;
  readonly esn: boolean;
  readonly vni: number;
  readonly epoch: number;
  /** Its peer is sa.label.peerId: it moves with the SA. */
  readonly sa: InboundSa | OutboundSa;
}

/** SHA-256("veil sa key v1\0" ‖ key ‖ salt), as native/satable.c computes it. */
function fingerprint(keymat: SecretKey): string {
  return createHash('sha256').update('veil sa key v1\0').update(keymat.exposeDanger()).digest('hex');
}

/** The TypeScript data path: the Forwarder's decisions between node:dgram sockets (or any UnderlayIo/VtepIo). */
export class TsDataPath implements DataPath {
  readonly forwarder: Forwarder;
  /**
   * The SAs made so far, in service and retired, by direction and key fingerprint, and each network's
   * epoch high-water mark: the rules of native/satable.c (its header comment says why), so both data
   * paths decide alike. In short, one key is in one place: installed again under its name (SPI, ESN,
   * epoch, VNI) it is the same SA, its counter and replay window go on, and it moves to the peer it is
   * now installed for; under another name it is refused (VEIL_ERR_SA_KEY_REUSED). An epoch more than two
   * behind its network's mark is refused (VEIL_ERR_SA_EPOCH_TOO_OLD) and retired SAs that far behind are
   * forgotten; a removed peer's SAs are kept (retired), a removed network takes its own with it.
   */
  readonly #made = new Map<string, Made>();
  readonly #marks = new Map<number, number>();
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
      this.options.relayPlain === false
        ? undefined
        : (d, address) => this.#forward(this.forwarder.inboundPlain(d, address)),
    );
    this.#running = true;
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.options.vtep.close();
    await this.options.underlay.close();
  }

  setNetwork(network: DataPathNetwork): void {
    if (!network.encrypted && this.options.relayPlain === false)
      throw new RangeError(`network ${network.vni} is plain, and plain networks run in the kernel here`);
    this.forwarder.setNetwork(network);
  }

  removeNetwork(vni: number): void {
    this.forwarder.removeNetwork(vni);
    for (const [key, m] of this.#made) if (m.vni === vni) this.#made.delete(key);
    this.#marks.delete(vni);
  }

  async addPeer(peer: DataPathPeer): Promise<void> {
    this.forwarder.setPeer({ id: peer.id, address: peer.address });
    await this.options.vtep.addPeer(peer.id, gatewayAddress(this.options.peerNet, peer.index), (d, address, srcPort) =>
      this.#forward(this.forwarder.outbound(peer.id, d, address, srcPort)),
    );
  }

  async removePeer(peerId: string): Promise<void> {
    await this.options.vtep.removePeer(peerId);
    this.forwarder.removePeer(peerId);
  }

  installInbound(spec: SaKeySpec): void {
    const made = this.#admit('in', spec);
    const sas = this.forwarder.sas;
    // The same SA again stays as it is, replay window and all (no check of the live epochs, as in C).
    const again = made && sas.inbound(made.spi) === made.sa && made.sa.label.peerId === spec.peerId;
    if (made && !again) {
      // Retired, or in service under this SPI for another peer: it serves again, for spec.peerId.
      const sa = made.sa as InboundSa;
      const label = sa.label;
      sa.label = { peerId: spec.peerId, epoch: spec.epoch };
      try {
        sas.installInbound(sa);
      } catch (err) {
        sa.label = label;
        throw err;
      }
    } else if (!made) {
      const sa = new InboundSa(this.#cipher(spec), spec.vni, this.options.replayWindow, {
        peerId: spec.peerId,
        epoch: spec.epoch,
      });
      sas.installInbound(sa);
      this.#remember('in', spec, sa);
    }
    this.#raiseMark(spec.vni, spec.epoch);
  }

  activateOutbound(spec: SaKeySpec, sequenceBudget?: number): void {
    const made = this.#admit('out', spec);
    const sas = this.forwarder.sas;
    if (made) {
      // Active before: its counter goes on, for spec.peerId (taken from another peer if it was theirs).
      const sa = made.sa as OutboundSa;
      const from = sa.label.peerId;
      if (from !== spec.peerId && sas.outbound(from, sa.vni) === sa) sas.removeOutbound(from, sa.vni);
      sa.label = { peerId: spec.peerId, epoch: spec.epoch };
      sas.activateOutbound(sa);
    } else {
      const sa = new OutboundSa(this.#cipher(spec), spec.vni, sequenceBudget, {
        peerId: spec.peerId,
        epoch: spec.epoch,
      });
      sas.activateOutbound(sa);
      this.#remember('out', spec, sa);
    }
    this.#raiseMark(spec.vni, spec.epoch);
  }

  #cipher(spec: SaKeySpec): ReturnType<typeof createEspCipher> {
    return createEspCipher(spec.spi, spec.keymat, spec.esn, this.options.provider);
  }

  /** Refuses what native/satable.c refuses before its tables; the SA already made with this key, if any. */
  #admit(direction: 'in' | 'out', spec: SaKeySpec): Made | undefined {
    const mark = this.#marks.get(spec.vni) ?? 0;
    if (spec.epoch + EPOCH_REACH < mark)
      throw new SaTableError(
        'VEIL_ERR_SA_EPOCH_TOO_OLD',
        `epoch ${spec.epoch} of peer ${spec.peerId} VNI ${spec.vni}: epoch ${mark} was installed`,
      );
    const made = this.#made.get(`${direction}/${fingerprint(spec.keymat)}`);
    if (made && (made.spi !== spec.spi || made.esn !== spec.esn || made.epoch !== spec.epoch || made.vni !== spec.vni))
      throw new SaTableError(
        'VEIL_ERR_SA_KEY_REUSED',
        `SPI 0x${spec.spi.toString(16)}: its key is in use under SPI 0x${made.spi.toString(16)} VNI ${made.vni} epoch ${made.epoch}`,
      );
    return made;
  }

  #remember(direction: 'in' | 'out', spec: SaKeySpec, sa: InboundSa | OutboundSa): void {
    const { spi, esn, vni, epoch } = spec;
    const fp = fingerprint(spec.keymat);
    this.#made.set(`${direction}/${fp}`, { direction, fingerprint: fp, spi, esn, vni, epoch, sa });
  }

  /** After every install or activation that succeeds: the network's mark rises, what fell out of reach is forgotten. */
  #raiseMark(vni: number, epoch: number): void {
    const mark = Math.max(this.#marks.get(vni) ?? 0, epoch);
    this.#marks.set(vni, mark);
    for (const [key, m] of this.#made)
      if (m.vni === vni && m.epoch + EPOCH_REACH < mark && !this.#inService(m)) this.#made.delete(key);
  }

  #inService(m: Made): boolean {
    return m.direction === 'in'
      ? this.forwarder.sas.inbound(m.spi) === m.sa
      : this.forwarder.sas.outbound(m.sa.label.peerId, m.vni) === m.sa;
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
    const made = [...this.#made.values()];
    const inService = made.filter((m) => this.#inService(m));
    return {
      pairs,
      unattributedDrops: this.forwarder.stats.unattributed.snapshot(),
      sendFailures: this.#sendFailures,
      tables: {
        pairs: pairs.length,
        inboundSas: inService.filter((m) => m.direction === 'in').length,
        outboundSas: inService.filter((m) => m.direction === 'out').length,
        retiredSas: made.length - inService.length,
      },
    };
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
