// The resolver's I/O: a UDP socket and a TCP server (RFC 1035 §4.2; RFC 7766: TCP is required, a
// truncated UDP answer is retried over it). Each message goes parse → resolve → answer or forward.
// Like the data plane it never throws on what arrives: every outcome is counted; a malformed
// query gets FORMERR or nothing, and never reaches anything that could take the gateway down.

import type { Socket as UdpSocket } from 'node:dgram';
import type { Server as TcpServer, Socket as TcpSocket } from 'node:net';
import dnsPacket from 'dns-packet';
import type { DecodedPacket } from 'dns-packet';
import { Resolver } from './resolver.js';
import type { DnsTable } from './records.js';
import type { ForwardResult } from './upstream.js';
import { RCODE, TCP_LENGTH_PREFIX, encodeAnswer, encodeFailure, parseQuery, type DnsDrop } from './wire.js';

export interface Forwarder {
  forward(message: Buffer, query: DecodedPacket, transport: 'udp' | 'tcp'): Promise<ForwardResult>;
}

export interface DnsServerOptions {
  /** The names as the model has them now (rebuilt by the caller when the model changes). */
  readonly table: () => DnsTable;
  readonly upstream: Forwarder;
  /** Forwarded queries waiting for upstream at once; more get SERVFAIL at once (default 256). */
  readonly maxForwards?: number;
  /** Open TCP connections; more are closed at once (default 64). */
  readonly maxTcpConnections?: number;
  /** RFC 7766 §6.2.3: idle TCP connections are closed (default 10 s). */
  readonly tcpIdleMs?: number;
  readonly log?: (level: 'info' | 'warn' | 'error', event: string, fields?: Record<string, unknown>) => void;
}

export interface DnsCounters {
  queries: number;
  /** Answered from the networks' names (any rcode). */
  local: number;
  nxdomain: number;
  forwarded: number;
  /** Forwarded, and no upstream answered in time: SERVFAIL. */
  upstreamFailed: number;
  /** Not from a network's address. */
  refused: number;
  formerr: number;
  notimp: number;
  /** Sent with TC set (over UDP): the client asks again over TCP. */
  truncated: number;
  /** Forwards refused because too many were waiting already: SERVFAIL. */
  overloaded: number;
  dropped: Record<DnsDrop | 'send-failed' | 'internal', number>;
  tcpConnections: number;
}

/** What the server holds right now (gauges, not counters). */
export interface DnsLoad {
  /** Open TCP connections. */
  connections: number;
  /** Queries read from TCP connections and not answered yet (waiting or being answered). */
  tcpPending: number;
  /** Bytes read from TCP connections and held: input not parsed yet plus the queries waiting. */
  tcpBufferedBytes: number;
  /** Answers written to TCP connections that the kernel has not taken yet. */
  tcpWriteBufferedBytes: number;
  /** TCP connections the server has stopped reading from. */
  tcpReadingPaused: number;
  /** TCP connections whose last answer filled the socket's write buffer, until it drains. */
  tcpWritesBlocked: number;
  /** Forwarded queries waiting for upstream. */
  forwards: number;
  /** UDP answers handed to the socket and not sent yet. */
  udpSendsInFlight: number;
}

const DEFAULT_MAX_FORWARDS = 256;
const DEFAULT_MAX_TCP = 64;
const DEFAULT_TCP_IDLE_MS = 10_000;

export class DnsServer {
  readonly #o: DnsServerOptions;
  readonly #resolver = new Resolver();
  readonly #udp = new Set<UdpSocket>();
  readonly #tcp = new Set<TcpServer>();
  readonly #connections = new Map<TcpSocket, { pending: number; writeBlocked: boolean; bytes: () => number }>();
  #forwards = 0;
  #udpSendsInFlight = 0;
  readonly #counters: DnsCounters = {
    queries: 0,
    local: 0,
    nxdomain: 0,
    forwarded: 0,
    upstreamFailed: 0,
    refused: 0,
    formerr: 0,
    notimp: 0,
    truncated: 0,
    overloaded: 0,
    dropped: { runt: 0, 'not-a-query': 0, oversize: 0, 'send-failed': 0, internal: 0 },
    tcpConnections: 0,
  };

  constructor(options: DnsServerOptions) {
    this.#o = options;
  }

  counters(): DnsCounters {
    return { ...this.#counters, dropped: { ...this.#counters.dropped } };
  }

  load(): DnsLoad {
    let tcpPending = 0;
    let tcpBufferedBytes = 0;
    let tcpWriteBufferedBytes = 0;
    let tcpReadingPaused = 0;
    let tcpWritesBlocked = 0;
    for (const [conn, held] of this.#connections) {
      tcpPending += held.pending;
      tcpBufferedBytes += held.bytes();
      tcpWriteBufferedBytes += conn.writableLength;
      if (conn.isPaused()) tcpReadingPaused++;
      if (held.writeBlocked) tcpWritesBlocked++;
    }
    return {
      connections: this.#connections.size,
      tcpPending,
      tcpBufferedBytes,
      tcpWriteBufferedBytes,
      tcpReadingPaused,
      tcpWritesBlocked,
      forwards: this.#forwards,
      udpSendsInFlight: this.#udpSendsInFlight,
    };
  }

  /** One message from `source` → the reply, or undefined for none. Never rejects. */
  async handle(message: Buffer, source: string, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    try {
      return await this.#handle(message, source, transport);
    } catch (err) {
      // A bug, not an input: count it and say so; the next query is served as usual.
      this.#counters.dropped.internal++;
      this.#o.log?.('error', 'dns: internal error answering a query', { error: (err as Error).message, source });
      return undefined;
    }
  }

  async #handle(message: Buffer, source: string, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    const parsed = parseQuery(message);
    if (!parsed.ok) {
      if ('drop' in parsed) {
        this.#counters.dropped[parsed.drop]++;
        return undefined;
      }
      if (parsed.rcode === RCODE.NOTIMP) this.#counters.notimp++;
      else this.#counters.formerr++;
      return parsed.reply;
    }
    this.#counters.queries++;
    const { query, question } = parsed;
    const r = this.#resolver.resolve(this.#o.table(), source, question);
    if (r.kind === 'refused') {
      this.#counters.refused++;
      return encodeFailure(query, question, RCODE.REFUSED);
    }
    if (r.kind === 'local') {
      this.#counters.local++;
      if (r.answer.rcode === RCODE.NXDOMAIN) this.#counters.nxdomain++;
      const reply = encodeAnswer(query, question, r.answer, transport);
      if (reply.readUInt16BE(2) & dnsPacket.TRUNCATED_RESPONSE) this.#counters.truncated++;
      return reply;
    }
    if (this.#forwards >= (this.#o.maxForwards ?? DEFAULT_MAX_FORWARDS)) {
      this.#counters.overloaded++;
      return encodeFailure(query, question, RCODE.SERVFAIL);
    }
    this.#counters.forwarded++;
    this.#forwards++;
    let answer: ForwardResult;
    try {
      answer = await this.#o.upstream.forward(message, query, transport);
    } finally {
      this.#forwards--;
    }
    if (answer.ok) return answer.message;
    this.#counters.upstreamFailed++;
    return encodeFailure(query, question, RCODE.SERVFAIL);
  }

  /** Serves queries arriving on a bound UDP socket (the server owns it from now on). */
  listenUdp(socket: UdpSocket): void {
    this.#udp.add(socket);
    socket.on('error', (err) => this.#o.log?.('warn', 'dns: UDP socket error', { error: err.message }));
    socket.on('message', (message, rinfo) => {
      void this.handle(message, rinfo.address, 'udp').then((reply) => {
        if (!reply || !this.#udp.has(socket)) return;
        this.#udpSendsInFlight++;
        socket.send(reply, rinfo.port, rinfo.address, (err) => {
          this.#udpSendsInFlight--;
          if (err) this.#counters.dropped['send-failed']++;
        });
      });
    });
  }

  /** Serves length-prefixed queries on every connection of a listening TCP server. */
  listenTcp(server: TcpServer): void {
    this.#tcp.add(server);
    server.on('error', (err) => this.#o.log?.('warn', 'dns: TCP server error', { error: err.message }));
    server.on('connection', (conn) => this.#serveConnection(conn));
  }

  #serveConnection(conn: TcpSocket): void {
    if (this.#connections.size >= (this.#o.maxTcpConnections ?? DEFAULT_MAX_TCP)) {
      conn.destroy();
      return;
    }
    this.#counters.tcpConnections++;
    const source = conn.remoteAddress ?? '';
    let buffered: Buffer = Buffer.alloc(0);
    let queuedBytes = 0;
    const held = { pending: 0, writeBlocked: false, bytes: () => buffered.length + queuedBytes };
    this.#connections.set(conn, held);
    // One query after the other per connection (RFC 7766 §6.2.1.1 allows it; answers keep their order).
    let chain: Promise<void> = Promise.resolve();
    conn.setTimeout(this.#o.tcpIdleMs ?? DEFAULT_TCP_IDLE_MS, () => conn.destroy());
    conn.on('error', () => conn.destroy());
    conn.on('close', () => this.#connections.delete(conn));
    conn.on('drain', () => (held.writeBlocked = false));
    conn.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= TCP_LENGTH_PREFIX) {
        const length = buffered.readUInt16BE(0);
        if (length === 0) {
          this.#counters.dropped.runt++;
          conn.destroy();
          return;
        }
        if (buffered.length < TCP_LENGTH_PREFIX + length) break;
        const message = Buffer.from(buffered.subarray(TCP_LENGTH_PREFIX, TCP_LENGTH_PREFIX + length));
        buffered = buffered.subarray(TCP_LENGTH_PREFIX + length);
        held.pending++;
        queuedBytes += message.length;
        chain = chain.then(async () => {
          queuedBytes -= message.length;
          const reply = await this.handle(message, source, 'tcp');
          held.pending--;
          if (!reply || conn.destroyed) return;
          const prefix = Buffer.alloc(TCP_LENGTH_PREFIX);
          prefix.writeUInt16BE(reply.length);
          if (!conn.write(Buffer.concat([prefix, reply]))) held.writeBlocked = true;
        });
      }
    });
  }

  async close(): Promise<void> {
    const udp = [...this.#udp];
    const tcp = [...this.#tcp];
    this.#udp.clear();
    this.#tcp.clear();
    for (const conn of this.#connections.keys()) conn.destroy();
    this.#connections.clear();
    await Promise.all([
      ...udp.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
      ...tcp.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
    ]);
  }
}
