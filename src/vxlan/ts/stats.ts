import { DropCounters } from '../wire/drops.js';

/** Traffic of one (peer, network) pair in both directions. */
export class PairStats {
  txPackets = 0;
  txBytes = 0;
  rxPackets = 0;
  rxBytes = 0;
  readonly drops = new DropCounters();
}

/**
 * Counters per (peer, network), plus drops that belong to no known pair (an
 * unknown SPI, a runt from an unknown address). Per-peer and per-network figures
 * are sums over pairs, computed when asked, so the hot path touches one object.
 */
export class GatewayStats {
  readonly #pairs = new Map<string, PairStats>();
  readonly unattributed = new DropCounters();

  pair(peerId: string, vni: number): PairStats {
    const key = `${peerId}\u0000${vni}`;
    let s = this.#pairs.get(key);
    if (!s) this.#pairs.set(key, (s = new PairStats()));
    return s;
  }

  entries(): Array<{ peerId: string; vni: number; stats: PairStats }> {
    return [...this.#pairs].map(([key, stats]) => {
      const [peerId, vni] = key.split('\u0000') as [string, string];
      return { peerId, vni: Number(vni), stats };
    });
  }
}
