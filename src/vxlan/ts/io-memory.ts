import { ESP_IN_UDP_PORT, VTEP_DELIVERY_PORT, VTEP_GATEWAY_PORT, VXLAN_PORT } from '../wire/constants.js';
import type { UnderlayEspHandler, UnderlayIo, UnderlayPlainHandler, VtepHandler, VtepIo } from './io.js';

/*
 * io.ts's two seams in memory, so that many gateways run in one process (docs/testing.md
 * "In-process cluster"). MemoryWire is the underlay between hosts: a datagram sent to
 * address:port reaches whichever MemoryWire.underlay() is open there, or nobody (lost, as UDP
 * to a closed port is). MemoryVtep is one host's kernel VXLAN device as its gateway sees it: the
 * test sends what the VTEP would send to a gateway port and hears what the gateway delivers.
 * Each receiver gets its own copy, in send order; by default on a later turn of the event loop,
 * as a socket's 'message' event comes.
 */

/** When a sent datagram reaches its receiver: in the send() call, on a microtask, or on setImmediate. */
export type Delivery = 'sync' | 'microtask' | 'immediate';

function schedule(delivery: Delivery, fn: () => void): void {
  if (delivery === 'sync') fn();
  else if (delivery === 'microtask') queueMicrotask(fn);
  else setImmediate(fn);
}

export interface SocketAddress {
  readonly address: string;
  readonly port: number;
}

export interface WireDatagram {
  readonly from: SocketAddress;
  readonly to: SocketAddress;
  readonly datagram: Uint8Array;
  /** Sent by inject(), not by a gateway. */
  readonly injected?: boolean;
}

/** What the wire does with a datagram: pass it, lose it, deliver it twice, or keep it until release(). */
export type WireVerdict = 'deliver' | 'drop' | 'duplicate' | 'hold';

type Receiver = (datagram: Uint8Array, from: SocketAddress) => void;

const key = (e: SocketAddress) => `${e.address}:${e.port}`;
const inUse = (e: SocketAddress) => new Error(`cannot bind ${key(e)}: bind EADDRINUSE`);

export class MemoryWire {
  readonly #bound = new Map<string, Receiver>();
  readonly #taps = new Set<(d: WireDatagram) => void>();
  #held: Array<{ d: WireDatagram; n: number }> = [];
  /** Datagram number (counts.sent at its sending) → deliveries not made yet. */
  readonly #pending = new Map<number, number>();
  /** Decides each datagram's fate after the taps saw it; a test replaces it to lose, repeat or reorder. */
  policy: (d: WireDatagram) => WireVerdict = () => 'deliver';
  readonly counts = { sent: 0, delivered: 0, dropped: 0, duplicated: 0, held: 0, unreachable: 0 };

  constructor(readonly delivery: Delivery = 'immediate') {}

  /** A host's UDP 4500 and 4789 on `address` (what DgramUnderlay binds). */
  underlay(address: string): UnderlayIo {
    const esp = { address, port: ESP_IN_UDP_PORT };
    const plain = { address, port: VXLAN_PORT };
    let open = false;
    let plainBound = false;
    return {
      open: async (onEsp: UnderlayEspHandler, onPlain?: UnderlayPlainHandler) => {
        if (this.#bound.has(key(esp)) || this.#bound.has(key(plain))) throw inUse(esp);
        this.#bound.set(key(esp), (d, from) => onEsp(d, from.address, from.port));
        if (onPlain) this.#bound.set(key(plain), (d, from) => onPlain(d, from.address, from.port));
        open = true;
        plainBound = onPlain !== undefined;
      },
      send: (datagram, toAddress, toPort) => {
        if (!open || (toPort !== ESP_IN_UDP_PORT && !plainBound)) return false;
        // As UnderlayIo says: ESP leaves from 4500, VXLAN from 4789.
        const from = toPort === ESP_IN_UDP_PORT ? esp : plain;
        this.#transmit({ from, to: { address: toAddress, port: toPort }, datagram: datagram.slice() });
        return true;
      },
      close: async () => {
        if (!open) return;
        open = false;
        this.#bound.delete(key(esp));
        if (plainBound) this.#bound.delete(key(plain));
      },
    };
  }

  /** Sends a datagram no gateway sent: an attacker on the underlay, or a replay of a captured one. */
  inject(d: Omit<WireDatagram, 'injected'>): void {
    this.#transmit({ ...d, datagram: d.datagram.slice(), injected: true });
  }

  /** Calls `fn` with every datagram as it is sent, before the policy. Returns what removes it. */
  tap(fn: (d: WireDatagram) => void): () => void {
    this.#taps.add(fn);
    return () => void this.#taps.delete(fn);
  }

  /** Records every datagram sent from now on, until stop(). */
  capture(): { readonly datagrams: WireDatagram[]; stop(): void } {
    const datagrams: WireDatagram[] = [];
    const stop = this.tap((d) => datagrams.push(d));
    return { datagrams, stop };
  }

  /** Delivers what the policy held, in send order or reversed (a reordering network). Returns how many. */
  release(order: 'sent' | 'reversed' = 'sent'): number {
    const held = this.#held;
    this.#held = [];
    if (order === 'reversed') held.reverse();
    for (const { d, n } of held) {
      this.#settle(n); // no longer held: pending as a delivery instead
      this.#deliver(d, n);
    }
    return held.length;
  }

  /**
   * True once each of the first `count` datagrams sent (counts.sent) has reached its receiver or been
   * lost (a held one once released and delivered). Deliveries wait for their turn of the event loop,
   * which a busy process can put off behind its timers.
   */
  settled(count: number): boolean {
    for (const n of this.#pending.keys()) if (n <= count) return false;
    return true;
  }

  #transmit(d: WireDatagram): void {
    const n = ++this.counts.sent;
    for (const tap of this.#taps) tap(d);
    const verdict = this.policy(d);
    if (verdict === 'drop') this.counts.dropped++;
    else if (verdict === 'hold') {
      this.counts.held++;
      this.#pending.set(n, 1);
      this.#held.push({ d, n });
    } else {
      this.#deliver(d, n);
      if (verdict === 'duplicate') {
        this.counts.duplicated++;
        this.#deliver(d, n);
      }
    }
  }

  #settle(n: number): void {
    const left = this.#pending.get(n)! - 1;
    if (left > 0) this.#pending.set(n, left);
    else this.#pending.delete(n);
  }

  #deliver(d: WireDatagram, n: number): void {
    this.#pending.set(n, (this.#pending.get(n) ?? 0) + 1);
    schedule(this.delivery, () => {
      this.#settle(n);
      // Looked up on arrival: a host that closed meanwhile receives nothing.
      const receiver = this.#bound.get(key(d.to));
      if (!receiver) {
        this.counts.unreachable++;
        return;
      }
      this.counts.delivered++;
      receiver(d.datagram.slice(), d.from);
    });
  }
}

/**
 * One host's VTEP side: the peers' gateway addresses (one each) and the delivery to vtepAddress:4789,
 * which always comes from hostAddress:VTEP_DELIVERY_PORT (what DgramVtep does).
 */
export class MemoryVtep implements VtepIo {
  readonly #gateways = new Map<string, { peerId: string; onDatagram: VtepHandler }>();
  readonly #listeners = new Set<(vxlan: Uint8Array, from: SocketAddress) => void>();
  #open = false;

  constructor(
    readonly hostAddress: string,
    readonly vtepAddress: string,
    readonly delivery: Delivery = 'immediate',
  ) {}

  // ---- the gateway's side (VtepIo) ----

  async open(): Promise<void> {
    this.#open = true;
  }

  async addPeer(peerId: string, gateway: string, onDatagram: VtepHandler): Promise<void> {
    if ([...this.#gateways.values()].some((p) => p.peerId === peerId)) return;
    if (this.#gateways.has(gateway)) throw inUse({ address: gateway, port: VTEP_GATEWAY_PORT });
    this.#gateways.set(gateway, { peerId, onDatagram });
  }

  async removePeer(peerId: string): Promise<void> {
    for (const [gateway, p] of this.#gateways) if (p.peerId === peerId) this.#gateways.delete(gateway);
  }

  deliver(datagram: Uint8Array): boolean {
    if (!this.#open) return false;
    const copy = datagram.slice();
    const from = { address: this.hostAddress, port: VTEP_DELIVERY_PORT };
    schedule(this.delivery, () => {
      for (const listen of this.#listeners) listen(copy.slice(), from);
    });
    return true;
  }

  async close(): Promise<void> {
    this.#open = false;
    this.#gateways.clear();
  }

  // ---- the VTEP's side (the test's) ----

  /** The gateway addresses bound now (peer id → address). */
  gateways(): Map<string, string> {
    return new Map([...this.#gateways].map(([gateway, p]) => [p.peerId, gateway]));
  }

  /**
   * Sends a VXLAN datagram to the gateway address `gateway`, from the VTEP (vtepAddress, a flow-entropy
   * source port, RFC 7348 §5) unless `from` says otherwise. False when no gateway listens there.
   */
  send(gateway: string, vxlan: Uint8Array, from: Partial<SocketAddress> = {}): boolean {
    const entry = this.#gateways.get(gateway);
    if (!entry) return false;
    const source = { address: from.address ?? this.vtepAddress, port: from.port ?? 49_152 };
    const copy = vxlan.slice();
    schedule(this.delivery, () => {
      // Looked up again on arrival: an address closed meanwhile receives nothing.
      if (this.#gateways.get(gateway) === entry) entry.onDatagram(copy, source.address, source.port);
    });
    return true;
  }

  /** Calls `fn` with each VXLAN datagram the gateway delivers to the VTEP. Returns what removes it. */
  listen(fn: (vxlan: Uint8Array, from: SocketAddress) => void): () => void {
    this.#listeners.add(fn);
    return () => void this.#listeners.delete(fn);
  }
}
