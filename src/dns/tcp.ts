// One TCP connection to the resolver: length-prefixed messages (RFC 1035 §4.2.2), answered one after
// the other and in order (RFC 7766 §6.2.1.1 allows it). What a client can make the gateway hold is
// bounded (docs/dns.md "Limits"):
//   - reading stops while MAX_TCP_PENDING queries (or MAX_TCP_PENDING_BYTES) wait, and while the
//     socket's write buffer is above its high-water mark; TCP flow control then holds the client back;
//   - a closed connection's waiting queries are dropped and its query in progress is aborted;
//   - a connection that is idle, whose query trickles in, or that takes no answers is closed.

import type { Socket } from 'node:net';
import { TCP_LENGTH_PREFIX } from './wire.js';

/**
 * Queries read from one connection and not answered yet. A stub resolver sends one or two at a time;
 * a pipelining client waits in TCP flow control past this, at no cost to the gateway.
 */
export const MAX_TCP_PENDING = 16;
/**
 * Bytes of the queries waiting on one connection. Real queries are under 512 bytes; one of 64 KiB
 * (RFC 1035 §4.2.2 allows it) is still taken alone when nothing else waits.
 */
export const MAX_TCP_PENDING_BYTES = 16 * 1024;
/** RFC 7766 §6.2.3 recommends closing idle connections after "the order of seconds". */
export const TCP_IDLE_MS = 10_000;
/**
 * A query's bytes must all arrive within this after its first one. A client sends a query in one
 * segment over a local link; one that trickles bytes only holds a connection slot (slow loris).
 */
export const TCP_QUERY_MS = 2_000;
/**
 * A client that takes none of its answers for this long is closed: its unread answers fill the
 * socket's write buffer and the connection would otherwise hold its slot for ever.
 */
export const TCP_STALLED_WRITE_MS = 5_000;

export interface TcpLimits {
  readonly idleMs: number;
  readonly queryMs: number;
  readonly stalledWriteMs: number;
}

export type TcpTimeout = 'idle' | 'slow-query' | 'stalled-write';

export interface TcpConnectionHooks {
  /** One query → its answer or none; never rejects. `signal` aborts when the connection closes. */
  answer(message: Buffer, signal: AbortSignal): Promise<Buffer | undefined>;
  /** A zero length prefix: the connection is closed. */
  runt(): void;
  timedOut(why: TcpTimeout): void;
  /** The connection is gone, with `dropped` queries it had sent and will never get answered. */
  closed(dropped: number): void;
}

const EMPTY = Buffer.alloc(0);

export class TcpConnection {
  readonly #conn: Socket;
  readonly #limits: TcpLimits;
  readonly #hooks: TcpConnectionHooks;
  /** Aborts the query in progress when the connection closes. */
  readonly #abort = new AbortController();
  /** Bytes read and not yet cut into queries: at most one incomplete message once there is room. */
  #input: Buffer = EMPTY;
  readonly #queue: Buffer[] = [];
  #queuedBytes = 0;
  #answering = false;
  #writeBlocked = false;
  #paused = false;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;
  #idleSince: number | undefined;
  #querySince: number | undefined;
  #blockedSince: number | undefined;

  constructor(conn: Socket, limits: TcpLimits, hooks: TcpConnectionHooks) {
    this.#conn = conn;
    this.#limits = limits;
    this.#hooks = hooks;
    conn.on('error', () => conn.destroy());
    conn.on('close', () => this.#onClose());
    conn.on('drain', () => {
      this.#writeBlocked = false;
      this.#step();
    });
    conn.on('data', (chunk: Buffer) => {
      this.#input = this.#input.length === 0 ? chunk : Buffer.concat([this.#input, chunk]);
      this.#take(true);
      this.#step();
    });
    this.#step();
  }

  /** Queries read and not answered yet (the one in progress included). */
  get pending(): number {
    return this.#queue.length + (this.#answering ? 1 : 0);
  }

  /** Bytes read and held: input not cut into queries yet, and the queries waiting. */
  get bufferedBytes(): number {
    return this.#input.length + this.#queuedBytes;
  }

  get readingPaused(): boolean {
    return this.#paused;
  }

  get writeBlocked(): boolean {
    return this.#writeBlocked;
  }

  #full(): boolean {
    return this.pending >= MAX_TCP_PENDING || this.#queuedBytes >= MAX_TCP_PENDING_BYTES;
  }

  /** Cuts whole messages off the input into the queue while there is room. */
  #take(arrived: boolean): void {
    let took = false;
    while (!this.#closed && !this.#full() && this.#input.length >= TCP_LENGTH_PREFIX) {
      const length = this.#input.readUInt16BE(0);
      if (length === 0) {
        this.#hooks.runt();
        this.#conn.destroy();
        return;
      }
      if (this.#input.length < TCP_LENGTH_PREFIX + length) break;
      // A copy: the query must not keep the whole chunk it came in alive.
      this.#queue.push(Buffer.from(this.#input.subarray(TCP_LENGTH_PREFIX, TCP_LENGTH_PREFIX + length)));
      this.#queuedBytes += length;
      this.#input = this.#input.subarray(TCP_LENGTH_PREFIX + length);
      took = true;
    }
    if (this.#input.length === 0) {
      this.#input = EMPTY;
      this.#querySince = undefined;
    } else if (took || (arrived && this.#querySince === undefined)) {
      // What is left starts the next query, whose first byte came in now.
      this.#querySince = Date.now();
    }
  }

  #step(): void {
    if (this.#closed || this.#conn.destroyed) return;
    this.#take(false);
    this.#answerNext();
    this.#updateReading();
    this.#arm();
  }

  #answerNext(): void {
    if (this.#answering || this.#writeBlocked) return;
    const message = this.#queue.shift();
    if (!message) return;
    this.#queuedBytes -= message.length;
    this.#answering = true;
    void this.#hooks.answer(message, this.#abort.signal).then((reply) => {
      this.#answering = false;
      if (this.#closed) return;
      if (reply) {
        const prefix = Buffer.alloc(TCP_LENGTH_PREFIX);
        prefix.writeUInt16BE(reply.length);
        // false: above the socket's high-water mark; nothing more is answered or read until 'drain'.
        if (!this.#conn.write(Buffer.concat([prefix, reply]))) this.#writeBlocked = true;
      }
      this.#step();
    });
  }

  #updateReading(): void {
    const pause = this.#writeBlocked || this.#full();
    if (pause && !this.#paused) {
      this.#paused = true;
      this.#conn.pause();
    } else if (!pause && this.#paused) {
      this.#paused = false;
      // The client could not send while we were not reading: its query's time starts again.
      if (this.#input.length > 0) this.#querySince = Date.now();
      this.#conn.resume();
    }
  }

  /** One timer for whichever bound applies now. */
  #arm(): void {
    const now = Date.now();
    const idle = this.pending === 0 && this.#input.length === 0 && !this.#writeBlocked;
    this.#idleSince = idle ? (this.#idleSince ?? now) : undefined;
    this.#blockedSince = this.#writeBlocked ? (this.#blockedSince ?? now) : undefined;
    let deadline: number | undefined;
    let why: TcpTimeout = 'idle';
    if (this.#blockedSince !== undefined) {
      deadline = this.#blockedSince + this.#limits.stalledWriteMs;
      why = 'stalled-write';
    } else if (!this.#paused && this.#querySince !== undefined) {
      deadline = this.#querySince + this.#limits.queryMs;
      why = 'slow-query';
    } else if (this.#idleSince !== undefined) {
      deadline = this.#idleSince + this.#limits.idleMs;
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (deadline === undefined) return;
    this.#timer = setTimeout(
      () => {
        this.#hooks.timedOut(why);
        this.#conn.destroy();
      },
      Math.max(0, deadline - now),
    );
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    const dropped = this.pending;
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#input = EMPTY;
    this.#abort.abort();
    this.#hooks.closed(dropped);
  }
}
