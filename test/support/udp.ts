import dgram from 'node:dgram';

/** UDP sockets for loopback tests, closed together by closeAll() (call it in afterAll). */
export class TestSockets {
  readonly #sockets: dgram.Socket[] = [];

  async bind(address: string, port: number): Promise<dgram.Socket> {
    const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(port, address, () => resolve());
    });
    this.#sockets.push(s);
    return s;
  }

  closeAll(): void {
    for (const s of this.#sockets.splice(0)) s.close();
  }
}

/**
 * The peer net of a data path under test on loopback addresses `127.a.b.*`: 127.a.64.0/18, so peer i's
 * gateway address is 127.a.64.0 + i (127.0.0.0/8 is all local: no route needed).
 */
export function loopbackPeerNet(net: string): string {
  return `${net.split('.').slice(0, 2).join('.')}.64.0`;
}
