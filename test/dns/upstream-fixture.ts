// A stand-in for the host's upstream resolver, on a loopback address (UDP and TCP):
//   <x>.upstream.test   A 192.0.2.7, TTL 4242, AA set, plus a TXT "from-fake-upstream" in additionals
//   slow.upstream.test  never answered (the resolver's timeout)
//   anything else       NXDOMAIN
// Every query it sees is remembered (and printed as "query NAME TYPE" when run as a program), so a
// test can tell what leaked upstream. As a program: node upstream-fixture.js ADDRESS PORT.
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server, type Socket as TcpSocket } from 'node:net';
import { fileURLToPath } from 'node:url';
import dnsPacket from 'dns-packet';

export const UPSTREAM_ANSWER = '192.0.2.7';
export const UPSTREAM_TTL = 4242;
export const UPSTREAM_MARK = 'from-fake-upstream';

export class FakeUpstream {
  readonly queries: Array<{ name: string; type: string; transport: 'udp' | 'tcp' }> = [];
  /** Exactly the bytes of every answer sent. */
  readonly sent: Buffer[] = [];
  #udp: Socket | undefined;
  #tcp: Server | undefined;
  port = 0;

  constructor(readonly onQuery?: (name: string, type: string) => void) {}

  /**
   * Binds UDP and TCP on one port. With port 0 the kernel picks the UDP port, and the TCP one of the
   * same number may be held by something else (tests run in parallel): then it tries another.
   */
  async start(address = '127.0.0.1', port = 0): Promise<this> {
    for (let attempt = 1; ; attempt++) {
      const udp = createSocket('udp4');
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, address, () => resolve());
      });
      const tcp = createServer((conn) => this.#serveTcp(conn));
      const listened = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
        tcp.once('error', (err: NodeJS.ErrnoException) => resolve(err));
        tcp.listen(udp.address().port, address, () => resolve(undefined));
      });
      if (listened) {
        udp.close();
        if (port !== 0 || listened.code !== 'EADDRINUSE' || attempt === 10) throw listened;
        continue;
      }
      this.port = udp.address().port;
      udp.on('message', (msg, rinfo) => {
        const answer = this.#answer(msg, 'udp');
        if (answer) udp.send(answer, rinfo.port, rinfo.address);
      });
      this.#udp = udp;
      this.#tcp = tcp;
      return this;
    }
  }

  #serveTcp(conn: TcpSocket): void {
    let buf = Buffer.alloc(0);
    conn.on('error', () => conn.destroy());
    conn.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        const answer = this.#answer(Buffer.from(msg), 'tcp');
        if (answer) {
          const len = Buffer.alloc(2);
          len.writeUInt16BE(answer.length);
          conn.write(Buffer.concat([len, answer]));
        }
      }
    });
  }

  #answer(msg: Buffer, transport: 'udp' | 'tcp'): Buffer | undefined {
    let q;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return undefined;
    }
    const question = q.questions?.[0];
    if (!question) return undefined;
    this.queries.push({ name: question.name, type: question.type, transport });
    this.onQuery?.(question.name, question.type);
    const name = question.name.toLowerCase();
    if (name === 'slow.upstream.test') return undefined;
    const known = name.endsWith('.upstream.test');
    const answer = dnsPacket.encode({
      type: 'response',
      id: q.id ?? 0,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | ((q.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | (known ? 0 : 3),
      questions: [question],
      answers:
        known && question.type === 'A'
          ? [{ type: 'A', name: question.name, ttl: UPSTREAM_TTL, data: UPSTREAM_ANSWER }]
          : [],
      additionals: known ? [{ type: 'TXT', name: question.name, ttl: UPSTREAM_TTL, data: UPSTREAM_MARK }] : [],
    });
    this.sent.push(answer);
    return answer;
  }

  async close(): Promise<void> {
    await Promise.all([
      new Promise<void>((r) => (this.#udp ? this.#udp.close(() => r()) : r())),
      new Promise<void>((r) => (this.#tcp ? this.#tcp.close(() => r()) : r())),
    ]);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [address = '127.0.0.1', port = '53'] = process.argv.slice(2);
  const upstream = await new FakeUpstream((name, type) => process.stdout.write(`query ${name} ${type}\n`)).start(
    address,
    Number(port),
  );
  process.stdout.write(`listening ${address}:${upstream.port}\n`);
}
