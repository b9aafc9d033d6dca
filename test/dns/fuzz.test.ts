// A seeded stream of malformed queries (random bytes, mutated valid queries, hostile headers and
// names) through the resolver and through real UDP and TCP sockets on loopback: nothing throws,
// no internal error is counted, every reply carries the query's ID, and the resolver still answers.
import { createSocket } from 'node:dgram';
import { connect, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import dnsPacket from 'dns-packet';
import type { DecodedPacket } from 'dns-packet';
import { buildTable } from '../../src/dns/records.js';
import { DnsServer } from '../../src/dns/server.js';
import type { EndpointRecord } from '../../src/store/types.js';
import { privateLoopback } from '../support/loopback.js';
import { Prng } from '../support/prng.js';
import { malformed } from './malformed.js';
import { networkRecord } from './network-record.js';

/** The resolver's sockets listen on a loopback address of this file's own (tests run in parallel). */
const HOST = privateLoopback();
const SEED = Number(process.env.VEIL_FUZZ_SEED ?? 0x5eed53);
const LOOP = networkRecord('loopnet', '127.0.0.0/8', 7);
const ENDPOINTS: EndpointRecord[] = [
  {
    id: 'e1',
    networkId: LOOP.id,
    name: 'web',
    aliases: ['svc'],
    hostId: 'h1',
    mac: '02:42:7f:00:00:02',
    ipv4: '127.0.0.2',
  },
  {
    id: 'e2',
    networkId: LOOP.id,
    name: 'api',
    aliases: ['svc'],
    hostId: 'h2',
    mac: '02:42:7f:00:00:03',
    ipv4: '127.0.0.3',
  },
];

function newServer() {
  const table = buildTable([LOOP], ENDPOINTS, 'h1');
  // Upstream answers nothing (quickly): forwarded junk costs nothing here.
  return new DnsServer({ table: () => table, upstream: { forward: async () => ({ ok: false, reason: 'timeout' }) } });
}

describe('fuzz: malformed queries', () => {
  it(`20 000 messages through handle(): no throw, no internal error, replies carry the query's ID (seed ${SEED})`, async () => {
    const s = newServer();
    const p = new Prng(SEED);
    let replies = 0;
    for (let i = 0; i < 20_000; i++) {
      const msg = malformed(p);
      const reply = await s.handle(msg, p.int(4) ? '127.0.0.9' : '10.9.9.9', p.int(3) ? 'udp' : 'tcp');
      if (!reply) continue;
      replies++;
      expect(reply.length).toBeGreaterThanOrEqual(12);
      expect(reply.readUInt16BE(0), `reply id for message ${i} (${msg.toString('hex')})`).toBe(msg.readUInt16BE(0));
      expect(reply.readUInt16BE(2) & 0x8000, 'QR set').not.toBe(0);
      expect(() => dnsPacket.decode(reply)).not.toThrow();
    }
    const c = s.counters();
    expect(c.dropped.internal, 'internal errors').toBe(0);
    expect(replies).toBeGreaterThan(1000);
    expect(c.formerr).toBeGreaterThan(100);
    const ok = dnsPacket.decode(
      (await s.handle(
        dnsPacket.encode({ type: 'query', id: 9, questions: [{ type: 'A', name: 'web' }] }),
        '127.0.0.9',
        'udp',
      ))!,
    );
    expect(ok.answers?.map((a) => (a as { data: string }).data)).toEqual(['127.0.0.2']);
  });

  describe('over real sockets on loopback', () => {
    let s: DnsServer;
    let port = 0;
    beforeAll(async () => {
      s = newServer();
      const udp = createSocket('udp4');
      await new Promise<void>((r) => udp.bind(0, HOST, () => r()));
      port = udp.address().port;
      const tcp = createServer();
      await new Promise<void>((r) => tcp.listen(port, HOST, () => r()));
      s.listenUdp(udp);
      s.listenTcp(tcp);
    });
    afterAll(async () => {
      await s.close();
    });

    /** Like a stub resolver: up to 3 tries, 1 s each. */
    const askUdp = (msg: Buffer): Promise<Buffer | undefined> =>
      new Promise((resolve) => {
        const c = createSocket('udp4');
        let tries = 0;
        const send = () => {
          if (tries++ === 3) {
            c.close();
            resolve(undefined);
            return;
          }
          c.send(msg, port, HOST);
          t = setTimeout(send, 1000);
        };
        let t: NodeJS.Timeout | undefined;
        c.on('message', (m) => {
          clearTimeout(t);
          c.close();
          resolve(m);
        });
        send();
      });

    it(`a UDP stream of 5 000 malformed datagrams, then the resolver still answers (seed ${SEED})`, async () => {
      const p = new Prng(SEED + 1);
      const sender = createSocket('udp4');
      await new Promise<void>((r) => sender.bind(0, '127.0.0.5', () => r()));
      for (let i = 0; i < 5_000; i++) {
        await new Promise<void>((r) => sender.send(malformed(p), port, HOST, () => r()));
        if (i % 500 === 0) await new Promise((r) => setTimeout(r, 5));
      }
      sender.close();
      // A client tries again (the flood can fill the socket's receive buffer: the kernel drops, not us).
      const reply = await askUdp(
        dnsPacket.encode({
          type: 'query',
          id: 77,
          flags: dnsPacket.RECURSION_DESIRED,
          questions: [{ type: 'A', name: 'svc' }],
        }),
      );
      expect(reply, 'an answer after the stream').toBeDefined();
      const r = dnsPacket.decode(reply!) as DecodedPacket;
      expect(r.id).toBe(77);
      expect(r.answers?.map((a) => (a as { data: string }).data).sort()).toEqual(['127.0.0.2', '127.0.0.3']);
      expect(s.counters().dropped.internal).toBe(0);
    });

    it('TCP: garbage frames, a zero length, a frame cut off mid-way; the next connection is answered', async () => {
      const p = new Prng(SEED + 2);
      for (let i = 0; i < 50; i++) {
        await new Promise<void>((resolve) => {
          const c = connect(port, HOST);
          c.on('error', () => resolve());
          c.on('close', () => resolve());
          c.on('data', () => undefined);
          c.on('connect', () => {
            const body = malformed(p);
            const len = Buffer.alloc(2);
            len.writeUInt16BE(p.int(4) === 0 ? 0 : p.int(3) === 0 ? body.length + 100 : body.length);
            c.end(Buffer.concat([len, body]));
            setTimeout(() => c.destroy(), 50);
          });
        });
      }
      const answer = await new Promise<Buffer>((resolve, reject) => {
        const c = connect(port, HOST);
        let buf = Buffer.alloc(0);
        c.on('error', reject);
        c.on('connect', () => {
          const q = dnsPacket.encode({ type: 'query', id: 78, questions: [{ type: 'A', name: 'web.loopnet' }] });
          const len = Buffer.alloc(2);
          len.writeUInt16BE(q.length);
          c.write(Buffer.concat([len, q]));
        });
        c.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
            c.destroy();
            resolve(buf.subarray(2));
          }
        });
      });
      const r = dnsPacket.decode(answer);
      expect(r.id).toBe(78);
      expect(r.answers?.map((a) => (a as { data: string }).data)).toEqual(['127.0.0.2']);
      expect(s.counters().dropped.internal).toBe(0);
    });
  });
});
