// The resolver's I/O: a UDP socket and a TCP server (RFC 1035 §4.2; RFC 7766: TCP is required, a
// truncated UDP answer is retried over it). Each message goes parse → resolve → answer or forward.
// Like the data plane it never throws on what arrives: every outcome is counted; a malformed
// query gets FORMERR or nothing, and never reaches anything that could take the gateway down.
// No client can make it hold more than a bound, or starve the others (docs/dns.md "Limits").

import type { Socket as UdpSocket } from 'node:dgram';
import type { Server as TcpServer, Socket as TcpSocket } from 'node:net';
import dnsPacket from 'dns-packet';
import type { DecodedPacket } from 'dns-packet';
import { Resolver } from './resolver.js';
import type { DnsTable } from './records.js';
import { TCP_IDLE_MS, TCP_QUERY_MS, TCP_STALLED_WRITE_MS, TcpConnection, type TcpTimeout } from './tcp.js';
import type { ForwardResult } from './upstream.js';
import { RCODE, encodeAnswer, encodeFailure, parseQuery, type DnsDrop } from './wire.js';

export interface Forwarder {
  /** `signal` aborts when the client is gone: the forward should stop; its result is discarded anyway. */
  forward(
    message: Buffer,
    query: DecodedPacket,
    transport: 'udp' | 'tcp',
    signal?: AbortSignal,
  ): Promise<ForwardResult>;
}

/** Forwarded queries waiting for upstream at once; more get SERVFAIL at once. */
export const MAX_FORWARDS = 256;
/**
 * Of those, from one source address (one container): a sixteenth, so that one container cannot take
 * them all; glibc asks A and AAAA at once, a busy container a few names more.
 */
export const MAX_FORWARDS_PER_SOURCE = 16;
/** Open TCP connections; more are closed at once. */
export const MAX_TCP_CONNECTIONS = 64;
/**
 * Open TCP connections from one source address. RFC 7766 §6.2.2: a client should use one connection
 * to a server, and a server may limit connections per client address; with four, a container that
 * holds all of its own leaves the others 60 of the 64.
 */
export const MAX_TCP_CONNECTIONS_PER_SOURCE = 4;
/**
 * UDP answers handed to the socket and not sent yet; more are dropped (the client asks again). The
 * kernel rarely makes a datagram wait, but nothing else would bound what does.
 */
export const MAX_UDP_SENDS_IN_FLIGHT = 256;

export interface DnsServerOptions {
  /** The names as the model has them now (rebuilt by the caller when the model changes). */
  readonly table: () => DnsTable;
  readonly upstream: Forwarder;
  /** Default MAX_FORWARDS. */
  readonly maxForwards?: number;
  /** Default MAX_FORWARDS_PER_SOURCE. */
  readonly maxForwardsPerSource?: number;
  /** Default MAX_TCP_CONNECTIONS. */
  readonly maxTcpConnections?: number;
  /** Default MAX_TCP_CONNECTIONS_PER_SOURCE. */
  readonly maxTcpConnectionsPerSource?: number;
  /** Default TCP_IDLE_MS. */
  readonly tcpIdleMs?: number;
  /** Default TCP_QUERY_MS. */
  readonly tcpQueryMs?: number;
  /** Default TCP_STALLED_WRITE_MS. */
  readonly tcpStalledWriteMs?: number;
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
  /** Forwards refused because too many were waiting already, in all or from the source: SERVFAIL. */
  overloaded: number;
  /** Queries of TCP connections that closed before their answer: dropped, or their forward aborted. */
  cancelled: number;
  dropped: Record<DnsDrop | 'send-failed' | 'send-backlog' | 'internal', number>;
  tcpConnections: number;
  /** TCP connections closed at once: too many open, in all or from the source. */
  tcpRefused: number;
  /** TCP connections closed for a time bound. */
  tcpTimedOut: Record<TcpTimeout, number>;
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

export class DnsServer {
  readonly #o: DnsServerOptions;
  readonly #resolver = new Resolver();
  readonly #udp = new Set<UdpSocket>();
  readonly #tcp = new Set<TcpServer>();
  readonly #connections = new Map<TcpSocket, TcpConnection>();
  /** Open TCP connections per source address (only sources with one or more). */
  readonly #connectionsBySource = new Map<string, number>();
  #forwards = 0;
  /** Forwards waiting per source address (only sources with one or more). */
  readonly #forwardsBySource = new Map<string, number>();
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
    cancelled: 0,
    dropped: { runt: 0, 'not-a-query': 0, oversize: 0, 'send-failed': 0, 'send-backlog': 0, internal: 0 },
    tcpConnections: 0,
    tcpRefused: 0,
    tcpTimedOut: { idle: 0, 'slow-query': 0, 'stalled-write': 0 },
  };

  constructor(options: DnsServerOptions) {
    this.#o = options;
  }

  counters(): DnsCounters {
    return {
      ...this.#counters,
      dropped: { ...this.#counters.dropped },
      tcpTimedOut: { ...this.#counters.tcpTimedOut },
    };
  }

  load(): DnsLoad {
    let tcpPending = 0;
    let tcpBufferedBytes = 0;
    let tcpWriteBufferedBytes = 0;
    let tcpReadingPaused = 0;
    let tcpWritesBlocked = 0;
    for (const [conn, served] of this.#connections) {
      tcpPending += served.pending;
      tcpBufferedBytes += served.bufferedBytes;
      tcpWriteBufferedBytes += conn.writableLength;
      if (served.readingPaused) tcpReadingPaused++;
      if (served.writeBlocked) tcpWritesBlocked++;
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

  /**
   * One message from `source` → the reply, or undefined for none. Never rejects. Once `signal` aborts
   * (the client is gone) nothing more is done for the message, and a forward under way is abandoned.
   */
  async handle(
    message: Buffer,
    source: string,
    transport: 'udp' | 'tcp',
    signal?: AbortSignal,
  ): Promise<Buffer | undefined> {
    try {
      return await this.#handle(message, source, transport, signal);
    } catch (err) {
      // A bug, not an input: count it and say so; the next query is served as usual.
      this.#counters.dropped.internal++;
      this.#o.log?.('error', 'dns: internal error answering a query', { error: (err as Error).message, source });
      return undefined;
    }
  }

  async #handle(
    message: Buffer,
    source: string,
    transport: 'udp' | 'tcp',
    signal: AbortSignal | undefined,
  ): Promise<Buffer | undefined> {
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
    const fromSource = this.#forwardsBySource.get(source) ?? 0;
    if (
      this.#forwards >= (this.#o.maxForwards ?? MAX_FORWARDS) ||
      fromSource >= (this.#o.maxForwardsPerSource ?? MAX_FORWARDS_PER_SOURCE)
    ) {
      this.#counters.overloaded++;
      return encodeFailure(query, question, RCODE.SERVFAIL);
    }
    if (signal?.aborted) return undefined;
    this.#counters.forwarded++;
    this.#forwards++;
    this.#forwardsBySource.set(source, fromSource + 1);
    let answer: ForwardResult | undefined;
    try {
      answer = await this.#forward(message, query, transport, signal);
    } finally {
      this.#forwards--;
      const left = (this.#forwardsBySource.get(source) ?? 1) - 1;
      if (left > 0) this.#forwardsBySource.set(source, left);
      else this.#forwardsBySource.delete(source);
    }
    if (!answer) return undefined;
    if (answer.ok) return answer.message;
    this.#counters.upstreamFailed++;
    return encodeFailure(query, question, RCODE.SERVFAIL);
  }

  /** The upstream's answer, or undefined as soon as `signal` aborts (whatever the forwarder does with it). */
  #forward(
    message: Buffer,
    query: DecodedPacket,
    transport: 'udp' | 'tcp',
    signal: AbortSignal | undefined,
  ): Promise<ForwardResult | undefined> {
    if (!signal) return this.#o.upstream.forward(message, query, transport);
    return new Promise((resolve, reject) => {
      const onAbort = () => resolve(undefined);
      signal.addEventListener('abort', onAbort, { once: true });
      this.#o.upstream.forward(message, query, transport, signal).then(
        (r) => {
          signal.removeEventListener('abort', onAbort);
          resolve(signal.aborted ? undefined : r);
        },
        (err: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(err as Error);
        },
      );
    });
  }

  /** Serves queries arriving on a bound UDP socket (the server owns it from now on). */
  listenUdp(socket: UdpSocket): void {
    this.#udp.add(socket);
    socket.on('error', (err) => this.#o.log?.('warn', 'dns: UDP socket error', { error: err.message }));
    socket.on('message', (message, rinfo) => {
      void this.handle(message, rinfo.address, 'udp').then((reply) => {
        if (!reply || !this.#udp.has(socket)) return;
        if (this.#udpSendsInFlight >= MAX_UDP_SENDS_IN_FLIGHT) {
          this.#counters.dropped['send-backlog']++;
          return;
        }
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
    const source = conn.remoteAddress;
    const fromSource = source === undefined ? 0 : (this.#connectionsBySource.get(source) ?? 0);
    if (
      source === undefined ||
      this.#connections.size >= (this.#o.maxTcpConnections ?? MAX_TCP_CONNECTIONS) ||
      fromSource >= (this.#o.maxTcpConnectionsPerSource ?? MAX_TCP_CONNECTIONS_PER_SOURCE)
    ) {
      this.#counters.tcpRefused++;
      conn.destroy();
      return;
    }
    this.#counters.tcpConnections++;
    this.#connectionsBySource.set(source, fromSource + 1);
    const limits = {
      idleMs: this.#o.tcpIdleMs ?? TCP_IDLE_MS,
      queryMs: this.#o.tcpQueryMs ?? TCP_QUERY_MS,
      stalledWriteMs: this.#o.tcpStalledWriteMs ?? TCP_STALLED_WRITE_MS,
    };
    const served = new TcpConnection(conn, limits, {
      answer: (message, signal) => this.handle(message, source, 'tcp', signal),
      runt: () => this.#counters.dropped.runt++,
      timedOut: (why) => this.#counters.tcpTimedOut[why]++,
      closed: (dropped) => {
        this.#counters.cancelled += dropped;
        this.#connections.delete(conn);
        const left = (this.#connectionsBySource.get(source) ?? 1) - 1;
        if (left > 0) this.#connectionsBySource.set(source, left);
        else this.#connectionsBySource.delete(source);
      },
    });
    this.#connections.set(conn, served);
  }

  async close(): Promise<void> {
    const udp = [...this.#udp];
    const tcp = [...this.#tcp];
    this.#udp.clear();
    this.#tcp.clear();
    // Each connection's 'close' cancels its queries and gives back its slot.
    for (const conn of this.#connections.keys()) conn.destroy();
    await Promise.all([
      ...udp.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
      ...tcp.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
    ]);
  }
}
