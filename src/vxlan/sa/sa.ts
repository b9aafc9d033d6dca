import { encodeEspPlaintext, ivFromSequence, sealEspDanger, type EspCipher } from '../wire/esp.js';
import type { Dropped } from '../wire/drops.js';
import { ReplayWindow } from './replay.js';
import { SEQ_EXHAUSTED, SequenceCounter, seqHigh, seqLow } from './sequence.js';

/** Which pair, network and epoch an SA belongs to (status, metrics, rotation). */
export interface SaLabel {
  readonly peerId: string;
  readonly epoch: number;
}

const UNLABELLED: SaLabel = { peerId: '', epoch: 0 };

/** Traffic figures of one SA, for status and metrics. */
export interface SaCounters {
  packets: number;
  bytes: number;
}

/**
 * The sending half of an SA. It owns the only path from a sequence number to an
 * IV (IV = sequence number), so under one key no IV repeats, and it stops
 * sealing when its counter is spent.
 */
export class OutboundSa {
  readonly counter: SequenceCounter;
  readonly counters: SaCounters = { packets: 0, bytes: 0 };

  constructor(
    readonly cipher: EspCipher,
    readonly vni: number,
    budget?: number,
    /** Reassigned only when the SA moves to another peer (src/vxlan/ts/datapath.ts, "one key, one place"). */
    public label: SaLabel = UNLABELLED,
  ) {
    this.counter = new SequenceCounter(cipher.esn, budget);
  }

  get spi(): number {
    return this.cipher.spi;
  }

  /** Seals one ESP payload (next header included in the trailer); returns SPI..ICV. */
  seal(payload: Uint8Array, nextHeader: number): { ok: true; datagram: Uint8Array } | Dropped {
    const seq = this.counter.next();
    if (seq === SEQ_EXHAUSTED) return { ok: false, drop: 'seq-exhausted' };
    const hi = seqHigh(seq);
    const lo = seqLow(seq);
    const datagram = sealEspDanger(
      this.cipher,
      hi,
      lo,
      ivFromSequence(hi, lo),
      encodeEspPlaintext(payload, nextHeader),
    );
    this.counters.packets++;
    this.counters.bytes += payload.length;
    return { ok: true, datagram };
  }
}

/** The receiving half of an SA: its key, its network and its anti-replay window. */
export class InboundSa {
  readonly replay: ReplayWindow;
  readonly counters: SaCounters = { packets: 0, bytes: 0 };

  constructor(
    readonly cipher: EspCipher,
    readonly vni: number,
    replayWindow?: number,
    /** Reassigned only when the SA moves to another peer (src/vxlan/ts/datapath.ts, "one key, one place"). */
    public label: SaLabel = UNLABELLED,
  ) {
    this.replay = new ReplayWindow(cipher.esn, replayWindow);
  }

  get spi(): number {
    return this.cipher.spi;
  }
}
