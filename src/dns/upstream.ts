// Forwarding to the host's resolvers: the nameservers of the gateway's own resolv.conf (the host
// netns: the containers' upstream is the host's). A query goes out as it came in, from a fresh
// socket per query (a random source port: RFC 5452 §9.2), to one server after the other, each
// with a timeout; the first answer that matches is passed back unchanged. None → SERVFAIL.

import { createSocket } from 'node:dgram';
import { statSync, readFileSync } from 'node:fs';
import { isIP, connect } from 'node:net';
import type { DecodedPacket } from 'dns-packet';
import { DNS_PORT, RESOLVER_ADDRESS, TCP_LENGTH_PREFIX, isAnswerTo } from './wire.js';

export interface Nameserver {
  readonly address: string;
  readonly port: number;
}

/** glibc's MAXNS (resolv.h): later nameserver lines are ignored there too. */
export const MAX_NAMESERVERS = 3;
/** glibc's default when resolv.conf names no server (resolv.conf(5)). */
const DEFAULT_NAMESERVER: Nameserver = { address: '127.0.0.1', port: DNS_PORT };

/**
 * The nameservers of a resolv.conf (resolv.conf(5)): `nameserver ADDRESS` lines, IPv4 or IPv6
 * (a %zone is kept for IPv6 link-local). Our own resolver address is left out (no loop).
 */
export function parseResolvConf(text: string): Nameserver[] {
  const servers: Nameserver[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const m = /^nameserver\s+(\S+)$/.exec(line);
    if (!m) continue;
    const address = m[1]!;
    if (isIP(address.split('%')[0]!) === 0 || address === RESOLVER_ADDRESS) continue;
    servers.push({ address, port: DNS_PORT });
    if (servers.length === MAX_NAMESERVERS) break;
  }
  return servers;
}

export interface UpstreamOptions {
  /** Default /etc/resolv.conf (the gateway's netns; `ip netns exec` puts /etc/netns/<name>/resolv.conf there). */
  readonly resolvConf?: string;
  /** Fixed servers instead of a file (tests). */
  readonly servers?: readonly Nameserver[];
  /** Per server. */
  readonly timeoutMs?: number;
  /** All servers together: a client (glibc: 5 s) gives up about then anyway. */
  readonly budgetMs?: number;
}

export const DEFAULT_UPSTREAM_TIMEOUT_MS = 2_000;
export const DEFAULT_UPSTREAM_BUDGET_MS = 4_000;
/** How often the file is checked for changes, at most (only when a query is forwarded). */
const RECHECK_MS = 1_000;

export type ForwardResult =
  | { ok: true; message: Buffer; server: string }
  | { ok: false; reason: 'no-server' | 'timeout' | 'unreachable' | 'aborted' };

export class Upstream {
  readonly #o: UpstreamOptions;
  #servers: readonly Nameserver[];
  #checkedAt = 0;
  #mtimeMs = -1;

  constructor(options: UpstreamOptions = {}) {
    this.#o = options;
    this.#servers = options.servers ?? [];
  }

  /** The servers a query goes to now (re-read when the file changed). */
  servers(): readonly Nameserver[] {
    if (this.#o.servers) return this.#o.servers;
    const now = Date.now();
    if (now - this.#checkedAt < RECHECK_MS && this.#mtimeMs >= 0) return this.#servers;
    this.#checkedAt = now;
    const path = this.#o.resolvConf ?? '/etc/resolv.conf';
    try {
      const mtime = statSync(path).mtimeMs;
      if (mtime !== this.#mtimeMs) {
        this.#mtimeMs = mtime;
        const parsed = parseResolvConf(readFileSync(path, 'utf8'));
        this.#servers = parsed.length > 0 ? parsed : [DEFAULT_NAMESERVER];
      }
    } catch {
      this.#mtimeMs = 0;
      this.#servers = [DEFAULT_NAMESERVER];
    }
    return this.#servers;
  }

  /**
   * Sends `message` (the client's query, unchanged) to each server in turn until one answers. `signal`
   * (the client is gone) closes the socket under way and asks no further server.
   */
  async forward(
    message: Buffer,
    query: DecodedPacket,
    transport: 'udp' | 'tcp',
    signal?: AbortSignal,
  ): Promise<ForwardResult> {
    const servers = this.servers();
    if (servers.length === 0) return { ok: false, reason: 'no-server' };
    const deadline = Date.now() + (this.#o.budgetMs ?? DEFAULT_UPSTREAM_BUDGET_MS);
    let reason: 'timeout' | 'unreachable' = 'timeout';
    for (const server of servers) {
      if (signal?.aborted) return { ok: false, reason: 'aborted' };
      const timeoutMs = Math.min(this.#o.timeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS, deadline - Date.now());
      if (timeoutMs <= 0) break;
      const r =
        transport === 'udp'
          ? await askUdp(server, message, query, timeoutMs, signal)
          : await askTcp(server, message, query, timeoutMs, signal);
      if (r.ok) return { ok: true, message: r.message, server: server.address };
      if (r.reason === 'aborted') return { ok: false, reason: 'aborted' };
      if (r.reason === 'unreachable') reason = 'unreachable';
    }
    return { ok: false, reason };
  }
}

type Asked = { ok: true; message: Buffer } | { ok: false; reason: 'timeout' | 'unreachable' | 'aborted' };

function askUdp(
  server: Nameserver,
  message: Buffer,
  query: DecodedPacket,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<Asked> {
  return new Promise((resolve) => {
    const socket = createSocket(isIP(server.address.split('%')[0]!) === 6 ? 'udp6' : 'udp4');
    let done = false;
    const onAbort = () => finish({ ok: false, reason: 'aborted' });
    const finish = (r: Asked) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.close();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, reason: 'timeout' }), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('error', () => finish({ ok: false, reason: 'unreachable' }));
    // Connected: the kernel delivers only datagrams from the server's address and port.
    socket.on('message', (answer) => {
      if (isAnswerTo(answer, query)) finish({ ok: true, message: answer });
    });
    socket.connect(server.port, server.address, () => {
      socket.send(message, (err) => {
        if (err) finish({ ok: false, reason: 'unreachable' });
      });
    });
  });
}

function askTcp(
  server: Nameserver,
  message: Buffer,
  query: DecodedPacket,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<Asked> {
  return new Promise((resolve) => {
    const socket = connect({ host: server.address, port: server.port });
    let done = false;
    let received = Buffer.alloc(0);
    const onAbort = () => finish({ ok: false, reason: 'aborted' });
    const finish = (r: Asked) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, reason: 'timeout' }), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('error', () => finish({ ok: false, reason: 'unreachable' }));
    socket.on('close', () => finish({ ok: false, reason: 'unreachable' }));
    socket.on('connect', () => {
      const prefix = Buffer.alloc(TCP_LENGTH_PREFIX);
      prefix.writeUInt16BE(message.length);
      socket.write(Buffer.concat([prefix, message]));
    });
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < TCP_LENGTH_PREFIX) return;
      const length = received.readUInt16BE(0);
      if (received.length < TCP_LENGTH_PREFIX + length) return;
      const answer = received.subarray(TCP_LENGTH_PREFIX, TCP_LENGTH_PREFIX + length);
      finish(
        isAnswerTo(answer, query) ? { ok: true, message: Buffer.from(answer) } : { ok: false, reason: 'unreachable' },
      );
    });
  });
}
