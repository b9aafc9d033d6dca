import { VeilError } from '../../errors.js';
import type { InboundSa, OutboundSa } from './sa.js';

/** Finds the inbound SA of an SPI (the inbound path's one question to the table). */
export interface InboundSaLookup {
  inbound(spi: number): InboundSa | undefined;
}

/** At most three epochs of one (peer, network) are live: previous, current, next (docs/keys.md "Rotation"). */
export const MAX_LIVE_EPOCHS = 3;
/** How far behind the newest epoch installed for its (peer, network) an epoch may still be installed. */
export const EPOCH_REACH = MAX_LIVE_EPOCHS - 1;

export class SaTableError extends VeilError {
  override readonly name = 'SaTableError';
  constructor(
    code:
      'VEIL_ERR_SA_SPI_IN_USE' | 'VEIL_ERR_SA_TOO_MANY_EPOCHS' | 'VEIL_ERR_SA_EPOCH_TOO_OLD' | 'VEIL_ERR_SA_KEY_REUSED',
    detail: string,
  ) {
    super(code, detail);
  }
}

/**
 * Every SA of a gateway. Inbound SAs are found by SPI (the hot path); outbound by
 * (peer, VNI), one current SA each. Rotation installs inbound first, switches
 * outbound later and retires old inbound last; this table only holds what it is
 * given and refuses what would be ambiguous (a reused SPI, a fourth live epoch).
 */
export class SaTable implements InboundSaLookup {
  readonly #inbound = new Map<number, InboundSa>();
  readonly #outbound = new Map<string, Map<number, OutboundSa>>();

  inbound(spi: number): InboundSa | undefined {
    return this.#inbound.get(spi);
  }

  outbound(peerId: string, vni: number): OutboundSa | undefined {
    return this.#outbound.get(peerId)?.get(vni);
  }

  installInbound(sa: InboundSa): void {
    const existing = this.#inbound.get(sa.spi);
    if (existing && existing !== sa) {
      const same =
        existing.label.peerId === sa.label.peerId && existing.vni === sa.vni && existing.label.epoch === sa.label.epoch;
      if (!same) {
        throw new SaTableError(
          'VEIL_ERR_SA_SPI_IN_USE',
          `SPI 0x${sa.spi.toString(16)} is in use by peer ${existing.label.peerId} epoch ${existing.label.epoch}`,
        );
      }
    }
    const live = this.inboundOf(sa.label.peerId, sa.vni).filter((x) => x.label.epoch !== sa.label.epoch);
    if (live.length >= MAX_LIVE_EPOCHS) {
      throw new SaTableError(
        'VEIL_ERR_SA_TOO_MANY_EPOCHS',
        `peer ${sa.label.peerId} VNI ${sa.vni} already has ${live.length} live epochs`,
      );
    }
    this.#inbound.set(sa.spi, sa);
  }

  /** Makes `sa` the one outbound SA of its (peer, network). */
  activateOutbound(sa: OutboundSa): void {
    let perPeer = this.#outbound.get(sa.label.peerId);
    if (!perPeer) this.#outbound.set(sa.label.peerId, (perPeer = new Map()));
    perPeer.set(sa.vni, sa);
  }

  retireInbound(peerId: string, vni: number, epoch: number): void {
    for (const sa of this.inboundOf(peerId, vni)) if (sa.label.epoch === epoch) this.#inbound.delete(sa.spi);
  }

  removeOutbound(peerId: string, vni: number): void {
    this.#outbound.get(peerId)?.delete(vni);
  }

  removePeer(peerId: string): void {
    this.#outbound.delete(peerId);
    for (const [spi, sa] of this.#inbound) if (sa.label.peerId === peerId) this.#inbound.delete(spi);
  }

  removeNetwork(vni: number): void {
    for (const perPeer of this.#outbound.values()) perPeer.delete(vni);
    for (const [spi, sa] of this.#inbound) if (sa.vni === vni) this.#inbound.delete(spi);
  }

  inboundOf(peerId: string, vni: number): InboundSa[] {
    return [...this.#inbound.values()]
      .filter((sa) => sa.label.peerId === peerId && sa.vni === vni)
      .sort((a, b) => a.label.epoch - b.label.epoch);
  }

  allInbound(): InboundSa[] {
    return [...this.#inbound.values()];
  }

  allOutbound(): OutboundSa[] {
    return [...this.#outbound.values()].flatMap((m) => [...m.values()]);
  }
}
