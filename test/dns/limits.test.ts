// The resolver's bounds (docs/dns.md "Limits"), on real loopback sockets: what one client can make the
// gateway hold over TCP and UDP, the time bounds on connections, and that the other clients keep being
// answered meanwhile. Memory is read from the server's own gauges (load()): bytes and queries it holds.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import dnsPacket from 'dns-packet';
import type { DecodedPacket } from 'dns-packet';
import { buildTable } from '../../src/dns/records.js';
import {
  DnsServer,
  MAX_FORWARDS_PER_SOURCE,
  MAX_TCP_CONNECTIONS_PER_SOURCE,
  MAX_UDP_SENDS_IN_FLIGHT,
  type DnsLoad,
  type DnsServerOptions,
  type Forwarder,
} from '../../src/dns/server.js';
import { MAX_TCP_PENDING, MAX_TCP_PENDING_BYTES } from '../../src/dns/tcp.js';
import { Upstream, type ForwardResult } from '../../src/dns/upstream.js';
import { TCP_LENGTH_PREFIX, TCP_MESSAGE_MAX } from '../../src/dns/wire.js';
import type { EndpointRecord } from '../../src/store/types.js';
import { privateLoopback } from '../support/loopback.js';
import { waitUntil } from '../support/wait.js';
import { addresses, askOn, askTcp, askUdp, collectAnswers, connectFrom, frame, pipelined, query } from './clients.js';
import { FakeUpstream, UPSTREAM_ANSWER } from './upstream-fixture.js';
import { networkRecord } from './network-record.js';

/** The resolver listens here; the clients are other loopback addresses of this file's own. */
const HOST = privateLoopback();
/** The attacking container. */
const A = privateLoopback();
/** Another container. */
const B = privateLoopback();

const LOOP = networkRecord('loopnet', '127.0.0.0/8', 8);
const endpoint = (name: string, ipv4: string, aliases: string[] = []): EndpointRecord => ({
  id: `${name}-${ipv4}`,
  networkId: LOOP.id,
  name,
  aliases,
  hostId: 'h1',
  mac: '02:42:7f:00:00:02',
  ipv4,
});
/** "many": 200 addresses, an answer of about 3.2 KB (big answers fill a socket's buffers sooner). */
const TABLE = buildTable(
  [LOOP],
  [
    endpoint('web', '127.0.0.2'),
    ...Array.from({ length: 200 }, (_, i) => endpoint(`m${i}`, `127.9.${i >> 8}.${i & 0xff}`, ['many'])),
  ],
  'h1',
);

/** The most one connection may hold of what it sent: queued queries, one message cut short, one read. */
const NODE_READ_CHUNK = 64 * 1024;
const HELD_PER_CONNECTION = MAX_TCP_PENDING_BYTES + 2 * (TCP_LENGTH_PREFIX + TCP_MESSAGE_MAX) + NODE_READ_CHUNK;
/** The most one connection may hold of its answers: a write buffer at its high-water mark, and one answer. */
const NODE_MAX_HIGH_WATER_MARK = 64 * 1024;
const WRITE_HELD_PER_CONNECTION = NODE_MAX_HIGH_WATER_MARK + TCP_LENGTH_PREFIX + TCP_MESSAGE_MAX;

/** Holds every forward until the test releases it; records what it was asked and its abort signal. */
class HeldForwarder implements Forwarder {
  readonly calls: Array<{ name: string; id: number; signal: AbortSignal | undefined; release: () => void }> = [];

  forward(_message: Buffer, q: DecodedPacket, _transport: 'udp' | 'tcp', signal?: AbortSignal): Promise<ForwardResult> {
    return new Promise((resolve) => {
      this.calls.push({
        name: q.questions?.[0]?.name ?? '',
        id: q.id ?? -1,
        signal,
        release: () => resolve({ ok: false, reason: 'timeout' }),
      });
    });
  }

  releaseAll(): void {
    for (const c of this.calls) c.release();
  }
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function serve(options: Partial<DnsServerOptions> = {}) {
  const held = new HeldForwarder();
  const s = new DnsServer({ table: () => TABLE, upstream: held, ...options });
  const tcp = createServer();
  await new Promise<void>((resolve) => tcp.listen(0, HOST, () => resolve()));
  s.listenTcp(tcp);
  const udp = createSocket('udp4');
  await new Promise<void>((resolve) => udp.bind(0, HOST, () => resolve()));
  s.listenUdp(udp);
  cleanups.push(() => s.close());
  return { s, tcpPort: (tcp.address() as { port: number }).port, udpPort: udp.address().port };
}

function client(c: Socket): Socket {
  cleanups.push(() => c.destroy());
  return c;
}

/** Polls the server's gauges until `done` holds or `timeoutMs` passed; returns the largest of each seen. */
async function watch(s: DnsServer, done: () => boolean, timeoutMs: number): Promise<{ max: DnsLoad; done: boolean }> {
  const max = s.load();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = s.load();
    for (const k of Object.keys(max) as Array<keyof DnsLoad>) max[k] = Math.max(max[k], now[k]);
    if (done()) return { max, done: true };
    if (Date.now() > deadline) return { max, done: false };
    await new Promise((r) => setTimeout(r, 10));
  }
}

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);
const turn = () => new Promise((r) => setImmediate(r));
/** waitUntil for what follows within a few turns of the event loop (no 50 ms polls). */
async function soon(what: string, cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await turn();
  }
}

describe('TCP: what one connection can make the resolver hold', () => {
  it('pipelined queries: at most MAX_TCP_PENDING wait, reading stops there and starts again as they are answered', async () => {
    const fwd = new HeldForwarder();
    const { s, tcpPort } = await serve({ upstream: fwd });
    const c = client(await connectFrom(HOST, tcpPort, A));
    // 4 MiB of queries for a name that goes upstream, where each waits until released.
    const stream = pipelined(
      'pipelined.example',
      Math.ceil((4 * 1024 * 1024) / frame(query('pipelined.example', 0)).length),
    );
    c.write(stream);
    const seen = await watch(s, () => fwd.calls.length === 1 && s.load().tcpReadingPaused === 1, 10_000);
    expect(seen.max.tcpPending, 'queries held for the connection').toBeLessThanOrEqual(MAX_TCP_PENDING);
    expect(seen.max.tcpBufferedBytes, 'bytes held for the connection').toBeLessThanOrEqual(HELD_PER_CONNECTION);
    expect(seen.done, 'the first query forwarded and reading paused').toBe(true);
    expect(fwd.calls).toHaveLength(1);
    // Each answer makes room for one more query: what was read past the first pause arrives in order.
    for (let i = 0; i < 3 * MAX_TCP_PENDING; i++) {
      fwd.calls[i]!.release();
      await soon(`query ${i + 1} forwarded`, () => fwd.calls.length === i + 2);
      expect(s.load().tcpPending).toBeLessThanOrEqual(MAX_TCP_PENDING);
    }
    expect(fwd.calls.map((f) => f.id)).toEqual(range(3 * MAX_TCP_PENDING + 1));
    fwd.releaseAll();
  });

  it('answers the client does not read: nothing more is answered or read above the write high-water mark; all arrive, in order, once it reads', async () => {
    const { s, tcpPort } = await serve({ tcpStalledWriteMs: 60_000 });
    const c = client(await connectFrom(HOST, tcpPort, A));
    c.pause();
    // 4000 answers of 3.2 KB: more than the kernel's socket buffers take.
    const n = 4000;
    c.write(pipelined('many', n));
    const seen = await watch(
      s,
      () => s.counters().queries === n || (s.load().tcpWritesBlocked === 1 && s.load().tcpReadingPaused === 1),
      20_000,
    );
    expect(seen.max.tcpWriteBufferedBytes, 'answers held for the connection').toBeLessThanOrEqual(
      WRITE_HELD_PER_CONNECTION,
    );
    expect(s.counters().queries, 'answering stopped').toBeLessThan(n);
    expect(seen.max.tcpPending).toBeLessThanOrEqual(MAX_TCP_PENDING);
    expect(seen.done, 'writes blocked and reading paused').toBe(true);
    const got = frameIds(c);
    c.resume();
    await waitUntil('every answer', () => got.ids.length === n, 30_000);
    expect(got.ids).toEqual(range(n));
    expect(addresses(dnsPacket.decode(got.last!))).toHaveLength(200);
  });

  it("a closed connection's queries are dropped and its forward aborted: nothing more is forwarded for it", async () => {
    const fwd = new HeldForwarder();
    const { s, tcpPort } = await serve({ upstream: fwd });
    const c = client(await connectFrom(HOST, tcpPort, A));
    c.write(Buffer.concat(range(10).map((i) => frame(query(`gone${i}.example`, i)))));
    await waitUntil(
      'one query forwarded, the others waiting',
      () => fwd.calls.length === 1 && s.load().tcpPending === 10,
    );
    c.destroy();
    await waitUntil('the connection gone', () => s.load().connections === 0);
    expect(fwd.calls[0]!.signal?.aborted, 'the forward under way aborted').toBe(true);
    expect(s.load()).toMatchObject({ tcpPending: 0, tcpBufferedBytes: 0, forwards: 0 });
    // Had the forwarder ignored the abort, its answer goes nowhere and the queue stays empty.
    fwd.calls[0]!.release();
    await turn();
    expect(fwd.calls).toHaveLength(1);
    expect(s.counters()).toMatchObject({ cancelled: 10, upstreamFailed: 0 });
  });

  it('through the real forwarder: the upstream never sees the queries a closed connection left waiting', async () => {
    const fake = await new FakeUpstream().start(HOST, 0);
    cleanups.push(() => fake.close());
    const up = new Upstream({ servers: [{ address: HOST, port: fake.port }], timeoutMs: 1_500 });
    const { s, tcpPort } = await serve({ upstream: up });
    const c = client(await connectFrom(HOST, tcpPort, A));
    c.write(Buffer.concat(range(3).map((i) => frame(query('slow.upstream.test', i)))));
    await waitUntil('upstream asked', () => fake.queries.length === 1);
    c.destroy();
    await waitUntil(
      'nothing held for the closed connection',
      () => s.load().connections === 0 && s.load().forwards === 0 && s.load().tcpPending === 0,
      10_000,
    );
    expect(fake.queries.map((q) => q.name)).toEqual(['slow.upstream.test']);
    expect(s.counters().upstreamFailed, 'no SERVFAIL made for a client that is gone').toBe(0);
  });
});

describe('TCP: connection slots and time bounds', () => {
  it('one source address gets MAX_TCP_CONNECTIONS_PER_SOURCE connections; past that it is closed at once while another source is served', async () => {
    const { s, tcpPort } = await serve();
    const mine: Socket[] = [];
    for (let i = 0; i < MAX_TCP_CONNECTIONS_PER_SOURCE; i++) {
      const c = client(await connectFrom(HOST, tcpPort, A));
      expect(addresses(await askOn(c, 'web', i)), `connection ${i + 1} served`).toEqual(['127.0.0.2']);
      mine.push(c);
    }
    const extra = client(await connectFrom(HOST, tcpPort, A));
    expect(await askOn(extra, 'web', 99), 'one connection too many from the same source').toBeUndefined();
    expect(addresses(await askTcp(HOST, tcpPort, B, 'web', 7)), 'another source').toEqual(['127.0.0.2']);
    mine[0]!.destroy();
    await waitUntil('a slot given back', () => s.load().connections === MAX_TCP_CONNECTIONS_PER_SOURCE - 1);
    expect(addresses(await askTcp(HOST, tcpPort, A, 'web', 8)), 'the source again, in the freed slot').toEqual([
      '127.0.0.2',
    ]);
    expect(s.counters().tcpRefused).toBe(1);
  });

  it('a query trickling in a byte at a time is closed once its time is up, though bytes keep coming (slow loris)', async () => {
    const { s, tcpPort } = await serve({ tcpIdleMs: 60_000, tcpQueryMs: 500 });
    const c = client(await connectFrom(HOST, tcpPort, A));
    const bytes = frame(query('web', 1));
    let sent = 0;
    // A byte every 100 ms, never the last one: each byte would reset a timer that counts idleness.
    const drip = setInterval(() => {
      if (sent < bytes.length - 1 && !c.destroyed) c.write(bytes.subarray(sent, ++sent));
    }, 100);
    cleanups.push(() => clearInterval(drip));
    const got = collectAnswers(c);
    await waitUntil('the server closed it', got.closed, 10_000);
    expect(got.answers).toEqual([]);
    expect(s.counters().tcpTimedOut['slow-query']).toBe(1);
  });

  it('an idle connection is closed once the idle bound has passed since its last answer', async () => {
    const { s, tcpPort } = await serve({ tcpIdleMs: 300 });
    const c = client(await connectFrom(HOST, tcpPort, A));
    expect(addresses(await askOn(c, 'web', 1))).toEqual(['127.0.0.2']);
    const got = collectAnswers(c);
    await waitUntil('the server closed it', got.closed, 10_000);
    expect(s.counters().tcpTimedOut.idle).toBe(1);
  });

  it('a client that takes none of its answers is closed once its writes have been blocked for the bound', async () => {
    const { s, tcpPort } = await serve({ tcpIdleMs: 60_000, tcpStalledWriteMs: 500 });
    const c = client(await connectFrom(HOST, tcpPort, A));
    c.pause();
    c.write(pipelined('many', 4000));
    // The client reads nothing, so it would not notice the close: the server's side is what counts.
    await waitUntil('the server closed it', () => s.load().connections === 0, 20_000);
    expect(s.counters().tcpTimedOut['stalled-write']).toBe(1);
    expect(s.load()).toMatchObject({ tcpPending: 0, tcpBufferedBytes: 0 });
  });
});

describe('UDP: what one source can make the resolver hold', () => {
  it('at most MAX_FORWARDS_PER_SOURCE forwards wait for one source; its others get SERVFAIL at once; another source still forwards', async () => {
    const fwd = new HeldForwarder();
    const { s, udpPort } = await serve({ upstream: fwd });
    const a = createSocket('udp4');
    cleanups.push(() => a.close());
    await new Promise<void>((resolve) => a.bind(0, A, () => resolve()));
    const replies: DecodedPacket[] = [];
    a.on('message', (m) => replies.push(dnsPacket.decode(m)));
    const n = 40;
    for (let i = 0; i < n; i++) a.send(query(`n${i}.example`, i), udpPort, HOST);
    await waitUntil('every query forwarded or refused', () => fwd.calls.length + replies.length === n);
    expect(fwd.calls).toHaveLength(MAX_FORWARDS_PER_SOURCE);
    expect(replies.map((r) => (r as { rcode?: string }).rcode)).toEqual(
      Array(n - MAX_FORWARDS_PER_SOURCE).fill('SERVFAIL'),
    );
    expect(s.load().forwards).toBe(MAX_FORWARDS_PER_SOURCE);
    const other = askUdp(HOST, udpPort, B, 'other.example', 4242);
    await waitUntil("the other source's query forwarded", () => fwd.calls.length === MAX_FORWARDS_PER_SOURCE + 1);
    expect(fwd.calls.at(-1)!.name).toBe('other.example');
    fwd.releaseAll();
    expect((await other)?.rcode).toBe('SERVFAIL');
    await waitUntil('every answer', () => replies.length === n);
    expect(s.load().forwards).toBe(0);
  });

  it('answers the socket has not sent yet are bounded: past MAX_UDP_SENDS_IN_FLIGHT they are dropped and counted', async () => {
    const s = new DnsServer({ table: () => TABLE, upstream: new HeldForwarder() });
    const socket = new StuckUdpSocket();
    s.listenUdp(socket as unknown as UdpSocket);
    const n = 1000;
    for (let i = 0; i < n; i++) socket.emit('message', query('web', i), { address: A, port: 5353, family: 'IPv4' });
    await waitUntil('every query answered', () => s.counters().queries === n);
    await turn();
    expect(socket.pending.length, 'answers handed to the socket').toBeLessThanOrEqual(MAX_UDP_SENDS_IN_FLIGHT);
    expect(s.load().udpSendsInFlight).toBe(MAX_UDP_SENDS_IN_FLIGHT);
    expect(s.counters().dropped['send-backlog']).toBe(n - MAX_UDP_SENDS_IN_FLIGHT);
    // The socket catches up: the next answer is sent.
    for (const done of socket.pending.splice(0)) done(null);
    socket.emit('message', query('web', 7), { address: A, port: 5353, family: 'IPv4' });
    await waitUntil('the next answer handed over', () => socket.pending.length === 1);
    await s.close();
  });
});

describe('a container attacking the resolver over TCP', () => {
  it('32 MiB of pipelined queries for a name upstream never answers, and slow-loris connections: the resolver holds a bounded amount and another container keeps being answered', async () => {
    const fake = await new FakeUpstream().start(HOST, 0);
    cleanups.push(() => fake.close());
    const { s, tcpPort, udpPort } = await serve({
      upstream: new Upstream({ servers: [{ address: HOST, port: fake.port }] }),
    });
    const heapBefore = process.memoryUsage();

    // The pipeline: as fast as the resolver takes it (the attacker's own buffer stays small).
    const ATTACK_BYTES = 32 * 1024 * 1024;
    const attack = client(await connectFrom(HOST, tcpPort, A));
    const chunk = pipelined('slow.upstream.test', Math.floor(65_536 / frame(query('slow.upstream.test', 0)).length));
    let handedOver = 0;
    const pump = () => {
      while (handedOver < ATTACK_BYTES && !attack.destroyed) {
        handedOver += chunk.length;
        if (!attack.write(chunk)) return void attack.once('drain', pump);
      }
    };
    pump();

    // 64 slow-loris connections from the same container, a byte a second each, re-opened when closed.
    let stopped = false;
    const loris = new Set<Socket>();
    let lorisOpened = 0;
    const openLoris = () => {
      if (stopped) return;
      lorisOpened++;
      const c = connect({ host: HOST, port: tcpPort, localAddress: A });
      loris.add(c);
      // 0x0101: a 257-byte query that never completes.
      const drip = setInterval(() => c.write(Buffer.from([1])), 1_000);
      c.on('connect', () => c.write(Buffer.from([1])));
      c.on('error', () => undefined);
      c.on('close', () => {
        clearInterval(drip);
        loris.delete(c);
        setTimeout(openLoris, 250);
      });
    };
    for (let i = 0; i < 64; i++) openLoris();
    cleanups.push(() => {
      stopped = true;
      for (const c of loris) c.destroy();
    });

    // Gauges all along.
    let watching = true;
    const watched = watch(s, () => !watching, 120_000);
    await waitUntil(
      'the attack sent in full or the resolver stopped reading it',
      () => handedOver >= ATTACK_BYTES || s.load().tcpReadingPaused > 0,
      60_000,
    );

    // Another container: local names over UDP and TCP, and a forwarded name, each answered as a stub expects.
    const failures: string[] = [];
    // Rounds over more than TCP_QUERY_MS: the slow-loris connections are closed and opened again meanwhile.
    for (let round = 0; round < 8; round++) {
      const udp = await askUdp(HOST, udpPort, B, 'web', round);
      if (addresses(udp).join() !== '127.0.0.2') failures.push(`round ${round}: UDP web`);
      const tcp = await askTcp(HOST, tcpPort, B, 'web', round, 2_000);
      if (addresses(tcp).join() !== '127.0.0.2') failures.push(`round ${round}: TCP web`);
      const fwd = await askUdp(HOST, udpPort, B, `r${round}.upstream.test`, 1000 + round);
      if (addresses(fwd).join() !== UPSTREAM_ANSWER) failures.push(`round ${round}: UDP forwarded`);
      await new Promise((r) => setTimeout(r, 250));
    }
    watching = false;
    const { max } = await watched;
    const heapAfter = process.memoryUsage();
    const inKernelOrHeld = handedOver - attack.writableLength;
    console.log(
      `[dns attack] attacker handed ${(inKernelOrHeld / 2 ** 20).toFixed(1)} MiB to its socket; the resolver held at most ` +
        `${(max.tcpBufferedBytes / 1024).toFixed(0)} KiB read, ${(max.tcpWriteBufferedBytes / 1024).toFixed(0)} KiB to write, ` +
        `${max.tcpPending} queries, ${max.connections} connections, ${max.forwards} forwards; ` +
        `${lorisOpened} slow-loris connections opened; heap ${(heapBefore.heapUsed / 2 ** 20).toFixed(0)} → ${(heapAfter.heapUsed / 2 ** 20).toFixed(0)} MiB`,
    );

    expect.soft(failures, 'the other container answered every time').toEqual([]);
    const attackerConnections = MAX_TCP_CONNECTIONS_PER_SOURCE;
    expect.soft(max.connections, 'connections open').toBeLessThanOrEqual(attackerConnections + 1);
    expect.soft(max.tcpPending, 'queries held').toBeLessThanOrEqual((attackerConnections + 1) * MAX_TCP_PENDING);
    expect
      .soft(max.tcpBufferedBytes, 'bytes read and held')
      .toBeLessThanOrEqual((attackerConnections + 1) * HELD_PER_CONNECTION);
    expect
      .soft(max.tcpWriteBufferedBytes, 'answers held')
      .toBeLessThanOrEqual((attackerConnections + 1) * WRITE_HELD_PER_CONNECTION);
    expect.soft(max.forwards, 'forwards waiting').toBeLessThanOrEqual(attackerConnections + 1);

    // The attacker leaves: nothing stays behind.
    stopped = true;
    attack.destroy();
    for (const c of loris) c.destroy();
    await waitUntil('nothing held', () => {
      const l = s.load();
      return l.connections === 0 && l.tcpPending === 0 && l.tcpBufferedBytes === 0 && l.forwards === 0;
    });
  }, 120_000);
});

/** The IDs of the answers arriving on `c`, in order, without decoding them; and the last one. */
function frameIds(c: Socket): { ids: number[]; last: Buffer | undefined } {
  const got: { ids: number[]; last: Buffer | undefined } = { ids: [], last: undefined };
  let buf: Buffer = Buffer.alloc(0);
  c.on('data', (d: Buffer) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    while (buf.length >= TCP_LENGTH_PREFIX && buf.length >= TCP_LENGTH_PREFIX + buf.readUInt16BE(0)) {
      const end = TCP_LENGTH_PREFIX + buf.readUInt16BE(0);
      got.ids.push(buf.readUInt16BE(TCP_LENGTH_PREFIX));
      got.last = buf.subarray(TCP_LENGTH_PREFIX, end);
      buf = buf.subarray(end);
    }
  });
  return got;
}

/** A UDP socket whose sends never complete (a full send buffer). */
class StuckUdpSocket extends EventEmitter {
  readonly pending: Array<(err: Error | null) => void> = [];
  send(_msg: Buffer, _port: number, _address: string, done: (err: Error | null) => void): void {
    this.pending.push(done);
  }
  close(done?: () => void): void {
    done?.();
  }
}
