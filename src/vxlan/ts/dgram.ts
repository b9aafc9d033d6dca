import dgram from 'node:dgram';
import { ESP_IN_UDP_PORT, VTEP_DELIVERY_PORT, VTEP_GATEWAY_PORT, VXLAN_PORT } from '../wire/constants.js';
import type { UnderlayEspHandler, UnderlayIo, UnderlayPlainHandler, VtepHandler, VtepIo } from './io.js';

/** Default socket buffers (about 200 KiB) overflow at line rate: 4 MiB each. */
export const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

export class IoError extends Error {
  override readonly name = 'IoError';
}

async function bindSocket(
  address: string,
  port: number,
  onMessage: (msg: Buffer, rinfo: dgram.RemoteInfo) => void,
): Promise<dgram.Socket> {
  const socket = dgram.createSocket({
    type: 'udp4',
    recvBufferSize: SOCKET_BUFFER_BYTES,
    sendBufferSize: SOCKET_BUFFER_BYTES,
  });
  socket.on('message', onMessage);
  await new Promise<void>((resolve, reject) => {
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const hint =
        err.code === 'EACCES' && port > 0 && port < 1024
          ? ' (a port below 1024 needs root or CAP_NET_BIND_SERVICE)'
          : '';
      reject(new IoError(`cannot bind ${address}:${port}: ${err.message}${hint}`));
    });
    socket.bind(port, address, () => {
      socket.removeAllListeners('error');
      resolve();
    });
  });
  // After binding, a send error (e.g. ICMP unreachable on a connected socket) must not crash the gateway.
  socket.on('error', () => {});
  return socket;
}

function closeSocket(socket: dgram.Socket | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (!socket) return resolve();
    try {
      socket.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}

const asBytes = (msg: Buffer): Uint8Array => new Uint8Array(msg.buffer, msg.byteOffset, msg.length);

export class DgramUnderlay implements UnderlayIo {
  #esp?: dgram.Socket;
  #plain?: dgram.Socket;

  constructor(readonly address: string) {}

  async open(onEsp: UnderlayEspHandler, onPlain?: UnderlayPlainHandler): Promise<void> {
    this.#esp = await bindSocket(this.address, ESP_IN_UDP_PORT, (msg, r) => onEsp(asBytes(msg), r.address, r.port));
    if (onPlain)
      this.#plain = await bindSocket(this.address, VXLAN_PORT, (msg, r) => onPlain(asBytes(msg), r.address, r.port));
  }

  send(datagram: Uint8Array, address: string, port: number): boolean {
    const socket = port === ESP_IN_UDP_PORT ? this.#esp : this.#plain;
    if (!socket) return false;
    socket.send(datagram, port, address);
    return true;
  }

  async close(): Promise<void> {
    await Promise.all([closeSocket(this.#esp), closeSocket(this.#plain)]);
  }
}

export class DgramVtep implements VtepIo {
  readonly #peers = new Map<string, dgram.Socket>();
  #deliver?: dgram.Socket;

  /**
   * `deliveryPort`: the privileged source port the vtep namespace's firewall accepts VXLAN from
   * (docs/plumbing.md "No local injection"); tests on loopback may pass 0. `gatewayPort`: where each
   * peer's gateway address is bound (VTEP_GATEWAY_PORT, privileged).
   */
  constructor(
    readonly hostAddress: string,
    readonly vtepAddress: string,
    readonly deliveryPort: number = VTEP_DELIVERY_PORT,
    readonly gatewayPort: number = VTEP_GATEWAY_PORT,
  ) {}

  async open(): Promise<void> {
    this.#deliver = await bindSocket(this.hostAddress, this.deliveryPort, () => {});
    this.#deliver.connect(VXLAN_PORT, this.vtepAddress);
    await new Promise<void>((resolve) => this.#deliver!.once('connect', () => resolve()));
  }

  /** One socket per peer, on its gateway address (the peer net is local in the host netns). */
  async addPeer(peerId: string, gateway: string, onDatagram: VtepHandler): Promise<void> {
    if (this.#peers.has(peerId)) return;
    this.#peers.set(
      peerId,
      await bindSocket(gateway, this.gatewayPort, (msg, r) => onDatagram(asBytes(msg), r.address, r.port)),
    );
  }

  async removePeer(peerId: string): Promise<void> {
    const socket = this.#peers.get(peerId);
    this.#peers.delete(peerId);
    await closeSocket(socket);
  }

  deliver(datagram: Uint8Array): boolean {
    if (!this.#deliver) return false;
    this.#deliver.send(datagram);
    return true;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#peers.values()].map(closeSocket));
    this.#peers.clear();
    await closeSocket(this.#deliver);
  }
}
