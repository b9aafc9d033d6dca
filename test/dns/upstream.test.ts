// Forwarding to the host's resolvers, against fake upstreams on loopback only.
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import dnsPacket from 'dns-packet';
import type { DecodedPacket } from 'dns-packet';
import { buildTable } from '../../src/dns/records.js';
import { DnsServer } from '../../src/dns/server.js';
import { parseResolvConf, Upstream } from '../../src/dns/upstream.js';
import { privateLoopback } from '../support/loopback.js';
import { waitUntil } from '../support/wait.js';
import { FakeUpstream, UPSTREAM_ANSWER, UPSTREAM_MARK, UPSTREAM_TTL } from './upstream-fixture.js';
import { networkRecord } from './network-record.js';

const NET = networkRecord('front', '10.1.0.0/24', 9);
const query = (name: string, id = 0x4242) =>
  dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name }] });
const decode = (b: Buffer) => dnsPacket.decode(b) as DecodedPacket & { rcode: string };

describe('resolv.conf', () => {
  it('takes the nameserver lines (IPv4 and IPv6, at most three), skips comments, junk and our own address', () => {
    const text = [
      '# generated',
      'search example.org',
      'nameserver 10.0.0.2 ; trailing comment',
      'nameserver   fe80::1%eth0',
      'nameserver not-an-ip',
      'nameserver 169.254.53.53',
      '  nameserver 192.0.2.53',
      'nameserver 192.0.2.54',
      'options timeout:1',
    ].join('\n');
    expect(parseResolvConf(text).map((s) => s.address)).toEqual(['10.0.0.2', 'fe80::1%eth0', '192.0.2.53']);
    expect(parseResolvConf('')).toEqual([]);
  });

  it("re-reads the file when it changes; glibc's 127.0.0.1 when it names no server or is missing", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'veil-dns-'));
    try {
      const path = join(dir, 'resolv.conf');
      writeFileSync(path, 'nameserver 127.0.0.77\n');
      const up = new Upstream({ resolvConf: path });
      expect(up.servers().map((s) => s.address)).toEqual(['127.0.0.77']);
      writeFileSync(path, 'nameserver 127.0.0.78\n');
      utimesSync(path, new Date(), new Date(Date.now() + 5_000));
      await new Promise((r) => setTimeout(r, 1_100));
      expect(up.servers().map((s) => s.address)).toEqual(['127.0.0.78']);
      expect(new Upstream({ resolvConf: join(dir, 'missing') }).servers().map((s) => s.address)).toEqual(['127.0.0.1']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('forwarding', () => {
  // Fake upstreams on a loopback address of this file's own (tests run in parallel).
  const HOST = privateLoopback();
  let fake: FakeUpstream;
  let silent: Socket;
  let silentPort = 0;
  beforeAll(async () => {
    fake = await new FakeUpstream().start(HOST, 0);
    silent = createSocket('udp4');
    await new Promise<void>((r) => silent.bind(0, HOST, () => r()));
    silentPort = silent.address().port;
  });
  afterAll(async () => {
    await fake.close();
    silent.close();
  });

  it('passes the upstream answer back byte for byte, over UDP and over TCP', async () => {
    for (const transport of ['udp', 'tcp'] as const) {
      const up = new Upstream({ servers: [{ address: HOST, port: fake.port }] });
      const q = query('www.upstream.test');
      const r = await up.forward(q, decode(q), transport);
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      expect(r.message.equals(fake.sent.at(-1)!), `${transport}: unchanged`).toBe(true);
      const d = decode(r.message);
      expect(d.answers?.[0]).toMatchObject({ data: UPSTREAM_ANSWER, ttl: UPSTREAM_TTL });
      expect(d.flag_aa, "upstream's own flags kept").toBe(true);
      expect(d.additionals?.some((a) => a.type === 'TXT')).toBe(true);
      expect(fake.queries.at(-1)).toMatchObject({ name: 'www.upstream.test', transport });
    }
    expect(UPSTREAM_MARK).toBeTruthy();
  });

  it('an aborted forward (its client is gone) ends at once, asking no further server, over UDP and TCP', async () => {
    for (const transport of ['udp', 'tcp'] as const) {
      const before = fake.queries.length;
      const server = { address: HOST, port: fake.port };
      const up = new Upstream({ servers: [server, server], timeoutMs: 2_000 });
      const q = query('slow.upstream.test');
      const abort = new AbortController();
      const forwarded = up.forward(q, decode(q), transport, abort.signal);
      await waitUntil(`${transport}: the first server asked`, () => fake.queries.length === before + 1);
      abort.abort();
      expect(await forwarded, transport).toEqual({ ok: false, reason: 'aborted' });
      expect(fake.queries.length, `${transport}: no other server asked`).toBe(before + 1);
    }
  });

  it('a silent server times out and the next one answers', async () => {
    const up = new Upstream({
      servers: [
        { address: HOST, port: silentPort },
        { address: HOST, port: fake.port },
      ],
      timeoutMs: 300,
    });
    const q = query('next.upstream.test');
    const t0 = Date.now();
    const r = await up.forward(q, decode(q), 'udp');
    expect(r.ok).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280);
  });

  it('a closed port (ICMP unreachable on the connected socket) moves on at once', async () => {
    const closed = createSocket('udp4');
    await new Promise<void>((r) => closed.bind(0, HOST, () => r()));
    const port = closed.address().port;
    await new Promise<void>((r) => closed.close(() => r()));
    const up = new Upstream({
      servers: [
        { address: HOST, port },
        { address: HOST, port: fake.port },
      ],
      timeoutMs: 2_000,
    });
    const q = query('closed.upstream.test');
    const t0 = Date.now();
    expect((await up.forward(q, decode(q), 'udp')).ok).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  it('ignores an answer with another ID (only the matching one is taken)', async () => {
    const liar = createSocket('udp4');
    await new Promise<void>((r) => liar.bind(0, HOST, () => r()));
    liar.on('message', (m, rinfo) => {
      const wrong = Buffer.from(m);
      wrong.writeUInt16BE((m.readUInt16BE(0) + 1) & 0xffff, 0);
      wrong.writeUInt16BE(0x8180, 2);
      liar.send(wrong, rinfo.port, rinfo.address);
    });
    const up = new Upstream({ servers: [{ address: HOST, port: liar.address().port }], timeoutMs: 300 });
    const q = query('liar.upstream.test');
    const r = await up.forward(q, decode(q), 'udp');
    liar.close();
    expect(r).toEqual({ ok: false, reason: 'timeout' });
  });

  it("through the server: forwarded names get upstream's answer, NXDOMAIN passes through, no answer → SERVFAIL in time", async () => {
    const table = buildTable([NET], [], 'h1');
    const up = new Upstream({ servers: [{ address: HOST, port: fake.port }], timeoutMs: 300 });
    const s = new DnsServer({ table: () => table, upstream: up });
    const ok = decode((await s.handle(query('a.upstream.test'), '10.1.0.5', 'udp'))!);
    expect(ok.answers?.map((a) => (a as { data: string }).data)).toEqual([UPSTREAM_ANSWER]);
    expect(decode((await s.handle(query('nothing.example'), '10.1.0.5', 'udp'))!).rcode).toBe('NXDOMAIN');
    const t0 = Date.now();
    const slow = decode((await s.handle(query('slow.upstream.test', 0x99), '10.1.0.5', 'udp'))!);
    expect(slow.rcode).toBe('SERVFAIL');
    expect(slow.id).toBe(0x99);
    expect(Date.now() - t0).toBeLessThan(1_500);
    expect(s.counters()).toMatchObject({ forwarded: 3, upstreamFailed: 1 });
  });

  it('at most maxForwards wait upstream at once; the rest get SERVFAIL at once', async () => {
    const table = buildTable([NET], [], 'h1');
    const up = new Upstream({ servers: [{ address: HOST, port: silentPort }], timeoutMs: 500 });
    const s = new DnsServer({ table: () => table, upstream: up, maxForwards: 4 });
    const replies = await Promise.all(
      Array.from({ length: 10 }, (_, i) => s.handle(query(`n${i}.example`, i), '10.1.0.5', 'udp')),
    );
    expect(replies.map((r) => decode(r!).rcode)).toEqual(Array(10).fill('SERVFAIL'));
    expect(s.counters()).toMatchObject({ overloaded: 6, upstreamFailed: 4 });
  });
});
