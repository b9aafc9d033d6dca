// A native data plane on loopback addresses of its own, with a VTEP socket and one ESP socket per
// peer, for tests that drive the addon's tables directly and watch what they seal and open.
import { randomInt } from 'node:crypto';
import type dgram from 'node:dgram';
import type { NativeAddon, NativeHandle, NativeSaSpec } from '../../src/vxlan/native/addon.js';
import { loopbackPeerNet, TestSockets } from './udp.js';
import { waitUntil } from './wait.js';
import { gatewayAddress } from '../../src/model/peer-net.js';

export interface NativeLoopbackOptions {
  /** Peer host indexes; each gets an address, a gateway address and an ESP socket. */
  readonly peers: readonly number[];
  /** First of the ports this harness uses (the data plane's and the peers'). */
  readonly portBase: number;
}

export class NativeLoopback {
  readonly sockets = new TestSockets();
  readonly address: { underlay: string; host: string; vtep: string };
  readonly ports: { esp: number; plain: number; vtep: number; peerEsp: number; peerPlain: number };
  readonly dp: NativeHandle<'dp'>;
  /** ESP datagrams each peer received: SPI and sequence number from the wire. */
  readonly seen = new Map<number, Array<{ spi: number; seq: number }>>();
  /** Plain VXLAN datagrams each peer received. */
  readonly plainSeen = new Map<number, number>();
  delivered = 0;
  #vtep!: dgram.Socket;
  readonly #net = `127.${100 + randomInt(100)}.${randomInt(250)}`;

  private constructor(
    readonly addon: NativeAddon,
    readonly options: NativeLoopbackOptions,
  ) {
    const b = options.portBase;
    this.address = { underlay: `${this.#net}.1`, host: `${this.#net}.2`, vtep: `${this.#net}.3` };
    this.ports = { esp: b, plain: b + 1, vtep: b + 2, peerEsp: b + 3, peerPlain: b + 4 };
    // deliveryPort 0: any source port, so no privilege is needed.
    this.dp = addon.dpCreate({
      underlayAddress: this.address.underlay,
      hostAddress: this.address.host,
      vtepAddress: this.address.vtep,
      peerNet: this.peerNet,
      gatewayPort: this.gatewayPort,
      espPort: this.ports.esp,
      plainPort: this.ports.plain,
      vtepPort: this.ports.vtep,
      peerEspPort: this.ports.peerEsp,
      peerPlainPort: this.ports.peerPlain,
      deliveryPort: 0,
    });
  }

  static async open(addon: NativeAddon, options: NativeLoopbackOptions): Promise<NativeLoopback> {
    const l = new NativeLoopback(addon, options);
    addon.dpStart(l.dp);
    for (const peer of options.peers) {
      l.addPeer(peer);
      l.seen.set(peer, []);
      l.plainSeen.set(peer, 0);
      const esp = await l.sockets.bind(l.peerAddress(peer), l.ports.peerEsp);
      esp.on('message', (m: Buffer) => l.seen.get(peer)!.push({ spi: m.readUInt32BE(0), seq: m.readUInt32BE(4) }));
      const plain = await l.sockets.bind(l.peerAddress(peer), l.ports.peerPlain);
      plain.on('message', () => l.plainSeen.set(peer, l.plainSeen.get(peer)! + 1));
    }
    l.#vtep = await l.sockets.bind(l.address.vtep, l.ports.vtep);
    l.#vtep.on('message', () => l.delivered++);
    return l;
  }

  peerAddress(peer: number): string {
    return `${this.#net}.${10 + peer}`;
  }

  /** The peer net on loopback: peer i's gateway address is its + i. */
  get peerNet(): string {
    return loopbackPeerNet(this.#net);
  }

  get gatewayPort(): number {
    return this.options.portBase + 5;
  }

  gatewayAddress(peer: number): string {
    return gatewayAddress(this.peerNet, peer);
  }

  addPeer(peer: number): void {
    this.addon.dpAddPeer(this.dp, peer, this.peerAddress(peer));
  }

  /** Sends one VXLAN frame of `vni` from the VTEP toward `peer`. */
  async sendFromVtep(peer: number, vni: number): Promise<void> {
    const vx = Buffer.alloc(60);
    vx[0] = 8;
    vx.writeUInt32BE(vni << 8, 4);
    await new Promise<void>((resolve) =>
      this.#vtep.send(vx, this.gatewayPort, this.gatewayAddress(peer), () => resolve()),
    );
  }

  /** One frame of an encrypted `vni` toward `peer`; the sequence number it left with. */
  async sealOne(peer: number, vni: number): Promise<number> {
    const list = this.seen.get(peer)!;
    const before = list.length;
    await this.sendFromVtep(peer, vni);
    await waitUntil(`a sealed datagram at peer ${peer}`, () => list.length > before, 5_000, 1);
    return list[list.length - 1]!.seq;
  }

  /** ESP datagrams sealed with `key` under `sa`'s SPI, sequence numbers 1..n, as its peer would send them. */
  sealedBy(sa: Omit<NativeSaSpec, 'key'>, key: Uint8Array, n: number): Buffer[] {
    const sealer = this.addon.createSa(key, sa.salt, sa.spi, sa.esn, true);
    return Array.from({ length: n }, (_, i) => {
      const seq = i + 1;
      const pt = Buffer.alloc(80); // inner UDP 8 + VXLAN 8 + 60, padding 1 2, pad length 2, next header 17
      pt.writeUInt16BE(4789, 2);
      pt.writeUInt16BE(76, 4);
      pt[8] = 8;
      pt.writeUInt32BE(sa.vni << 8, 12);
      pt.set([1, 2, 2, 17], 76);
      const iv = Buffer.alloc(8);
      iv.writeUInt32BE(seq, 4);
      return this.addon.sealRawDanger(sealer, 0, seq, iv, pt);
    });
  }

  /** Sends `packets` to the data plane's ESP port; how many reached the VTEP once each was delivered or dropped. */
  async deliver(packets: Buffer[]): Promise<number> {
    const sender = await this.sockets.bind(this.address.underlay, 0);
    const drops = () => {
      const s = this.addon.dpStats(this.dp);
      const sum = (d: Partial<Record<string, number>>) => Object.values(d).reduce<number>((a, b) => a + (b ?? 0), 0);
      return sum(s.unattributed) + s.pairs.reduce((a, p) => a + sum(p.drops), 0);
    };
    const before = this.delivered;
    const dropsBefore = drops();
    for (const p of packets) sender.send(p, this.ports.esp, this.address.underlay);
    await waitUntil(
      'every datagram delivered or dropped',
      () => this.delivered - before + drops() - dropsBefore >= packets.length,
      5_000,
      1,
    );
    return this.delivered - before;
  }

  close(): void {
    this.sockets.closeAll();
    this.addon.dpClose(this.dp);
  }
}
