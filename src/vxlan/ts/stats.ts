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

  /** A removed network's pairs go with it (native/satable.c does the same). */
  removeNetwork(vni: number): void {
    for (const key of this.#pairs.keys()) if (key.endsWith(`\u0000${vni}`)) this.#pairs.delete(key);
  }

  get size(): number {
    return this.#pairs.size;
  }

  entries(): Array<{ peerId: string; vni: number; stats: PairStats }> {
    return [...this.#pairs].map(([key, stats]) => {
      const [peerId, vni] = key.split('\u0000') as [string, string];
      return { peerId, vni: Number(vni), stats };
    });
  }
}
