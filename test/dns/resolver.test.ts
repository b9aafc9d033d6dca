// The resolver as a table: who asks (source address), what (name, type) → what comes back.
// Through DnsServer.handle, so every row also goes through dns-packet's encoder and decoder.
import { describe, expect, it } from 'vitest';
import dnsPacket from 'dns-packet';
import type { DecodedPacket } from 'dns-packet';
import { buildTable } from '../../src/dns/records.js';
import { DnsServer, type Forwarder } from '../../src/dns/server.js';
import { reverseAddress } from '../../src/dns/resolver.js';
import type { EndpointRecord, NetworkRecord } from '../../src/store/types.js';
import { networkRecord } from './network-record.js';

const net = networkRecord;
const FRONT = net('front', '10.1.0.0/24', 100);
const BACK = net('back', '10.2.0.0/24', 200);
const ep = (
  network: NetworkRecord,
  name: string,
  ipv4: string,
  hostId: string,
  extra: Partial<EndpointRecord> = {},
): EndpointRecord => ({
  id: `${name}-${network.name}`,
  networkId: network.id,
  name,
  aliases: [],
  hostId,
  mac: '02:42:0a:00:00:01',
  ipv4,
  ...extra,
});
const ENDPOINTS: EndpointRecord[] = [
  ep(FRONT, 'web', '10.1.0.2', 'h1', { aliases: ['www', 'svc'], sandbox: { netns: '/run/netns/c1' } }),
  ep(FRONT, 'api', '10.1.0.3', 'h2', { aliases: ['svc', 'Shared'], sandbox: { netns: '/run/netns/c2' } }),
  ep(FRONT, 'lonely', '10.1.0.9', 'h1', { sandbox: { netns: '/run/netns/c9' } }),
  ep(BACK, 'db', '10.2.0.2', 'h1', { sandbox: { netns: '/run/netns/c3' } }),
  // web's container is on back too (same sandbox, same host): it learns back's names.
  ep(BACK, 'web', '10.2.0.5', 'h1', { sandbox: { netns: '/run/netns/c1' } }),
];
const UPSTREAM = dnsPacket.encode({
  type: 'response',
  id: 7,
  flags: dnsPacket.AUTHORITATIVE_ANSWER,
  questions: [{ type: 'A', name: 'example.org' }],
  answers: [{ type: 'A', name: 'example.org', ttl: 99, data: '192.0.2.1' }],
});

function server(endpoints = ENDPOINTS, forwarded: string[] = []) {
  const upstream: Forwarder = {
    forward: async (message, query) => {
      forwarded.push(query.questions![0]!.name);
      return { ok: true, message: Buffer.concat([message.subarray(0, 2), UPSTREAM.subarray(2)]), server: 'fake' };
    },
  };
  const table = buildTable([FRONT, BACK], endpoints, 'h1');
  return new DnsServer({ table: () => table, upstream });
}

async function ask(
  s: DnsServer,
  source: string,
  name: string,
  type = 'A',
  opts: { transport?: 'udp' | 'tcp'; edns?: number; klass?: 'IN' | 'CH' } = {},
): Promise<DecodedPacket & { rcode: string }> {
  const query = dnsPacket.encode({
    type: 'query',
    id: 0x1234,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: type as 'A', name, class: opts.klass ?? 'IN' }],
    additionals: opts.edns
      ? [
          {
            type: 'OPT',
            name: '.',
            udpPayloadSize: opts.edns,
            extendedRcode: 0,
            ednsVersion: 0,
            flags: 0,
            flag_do: false,
            options: [],
          },
        ]
      : [],
  });
  const reply = await s.handle(query, source, opts.transport ?? 'udp');
  expect(reply, `a reply to ${name}`).toBeDefined();
  return dnsPacket.decode(reply!) as DecodedPacket & { rcode: string };
}
const data = (p: DecodedPacket) => (p.answers ?? []).map((a) => (a as { data: string }).data);

describe('the resolver, as a table', () => {
  // [who asks, name, type] → rcode, answers (as a set), authoritative, forwarded upstream
  const rows: Array<{
    why: string;
    from: string;
    name: string;
    type?: string;
    rcode: string;
    answers?: string[];
    aa?: boolean;
    forwarded?: boolean;
    klass?: 'IN' | 'CH';
  }> = [
    {
      why: 'a container name on the same network',
      from: '10.1.0.2',
      name: 'api',
      rcode: 'NOERROR',
      answers: ['10.1.0.3'],
      aa: true,
    },
    {
      why: 'names compare case-insensitively (RFC 4343), trailing dot or not',
      from: '10.1.0.2',
      name: 'API.',
      rcode: 'NOERROR',
      answers: ['10.1.0.3'],
      aa: true,
    },
    { why: 'an alias', from: '10.1.0.3', name: 'www', rcode: 'NOERROR', answers: ['10.1.0.2'], aa: true },
    {
      why: 'an alias shared by two endpoints gives both',
      from: '10.1.0.9',
      name: 'svc',
      rcode: 'NOERROR',
      answers: ['10.1.0.2', '10.1.0.3'],
      aa: true,
    },
    {
      why: 'aliases are case-insensitive too',
      from: '10.1.0.9',
      name: 'shared',
      rcode: 'NOERROR',
      answers: ['10.1.0.3'],
      aa: true,
    },
    { why: '<name>.<network>', from: '10.1.0.9', name: 'api.front', rcode: 'NOERROR', answers: ['10.1.0.3'], aa: true },
    {
      why: '<alias>.<network>',
      from: '10.1.0.9',
      name: 'svc.front.',
      rcode: 'NOERROR',
      answers: ['10.1.0.2', '10.1.0.3'],
      aa: true,
    },
    {
      why: "an unknown name under the network's own domain",
      from: '10.1.0.9',
      name: 'nope.front',
      rcode: 'NXDOMAIN',
      answers: [],
      aa: true,
    },
    {
      why: "the network's domain itself exists, without data",
      from: '10.1.0.9',
      name: 'front',
      rcode: 'NOERROR',
      answers: [],
      aa: true,
    },
    {
      why: 'AAAA for a name we own: no data, and not sent upstream',
      from: '10.1.0.2',
      name: 'api',
      type: 'AAAA',
      rcode: 'NOERROR',
      answers: [],
      aa: true,
    },
    {
      why: 'ANY for a name we own: its addresses',
      from: '10.1.0.2',
      name: 'api',
      type: 'ANY',
      rcode: 'NOERROR',
      answers: ['10.1.0.3'],
      aa: true,
    },
    {
      why: 'PTR of an address in use',
      from: '10.1.0.9',
      name: '3.0.1.10.in-addr.arpa',
      type: 'PTR',
      rcode: 'NOERROR',
      answers: ['api.front'],
      aa: true,
    },
    {
      why: 'PTR of a free address of the network',
      from: '10.1.0.9',
      name: '77.0.1.10.in-addr.arpa',
      type: 'PTR',
      rcode: 'NXDOMAIN',
      answers: [],
      aa: true,
    },
    {
      why: 'a name on no network goes upstream',
      from: '10.1.0.9',
      name: 'example.org',
      rcode: 'NOERROR',
      answers: ['192.0.2.1'],
      aa: true,
      forwarded: true,
    },
    {
      why: 'PTR outside the networks in scope goes upstream',
      from: '10.1.0.9',
      name: '1.0.0.127.in-addr.arpa',
      type: 'PTR',
      rcode: 'NOERROR',
      forwarded: true,
    },
    {
      why: 'a partial reverse name is not an address: upstream',
      from: '10.1.0.9',
      name: '0.1.10.in-addr.arpa',
      type: 'PTR',
      rcode: 'NOERROR',
      forwarded: true,
    },
    {
      why: 'another class (CH version.bind) goes upstream',
      from: '10.1.0.9',
      name: 'version.bind',
      type: 'TXT',
      klass: 'CH',
      rcode: 'NOERROR',
      forwarded: true,
    },
    // isolation: back's names are not front's
    {
      why: "isolation: front does not know back's container",
      from: '10.1.0.9',
      name: 'db',
      rcode: 'NOERROR',
      answers: ['192.0.2.1'],
      forwarded: true,
    },
    {
      why: "isolation: nor back's domain",
      from: '10.1.0.9',
      name: 'db.back',
      rcode: 'NOERROR',
      answers: ['192.0.2.1'],
      forwarded: true,
    },
    {
      why: "isolation: nor back's reverse names",
      from: '10.1.0.9',
      name: '2.0.2.10.in-addr.arpa',
      type: 'PTR',
      rcode: 'NOERROR',
      forwarded: true,
    },
    {
      why: 'isolation: back sees only its own "web" (10.2.0.5), not front\'s',
      from: '10.2.0.2',
      name: 'web',
      rcode: 'NOERROR',
      answers: ['10.2.0.5'],
      aa: true,
    },
    {
      why: "isolation: back does not know front's api",
      from: '10.2.0.2',
      name: 'api',
      rcode: 'NOERROR',
      answers: ['192.0.2.1'],
      forwarded: true,
    },
    {
      why: 'a container on two networks: its own network first',
      from: '10.1.0.2',
      name: 'web',
      rcode: 'NOERROR',
      answers: ['10.1.0.2'],
      aa: true,
    },
    {
      why: "a container on two networks learns the other's names",
      from: '10.1.0.2',
      name: 'db',
      rcode: 'NOERROR',
      answers: ['10.2.0.2'],
      aa: true,
    },
    { why: '…and its domain', from: '10.1.0.2', name: 'db.back', rcode: 'NOERROR', answers: ['10.2.0.2'], aa: true },
    { why: 'a source on no network is refused', from: '192.168.7.7', name: 'api', rcode: 'REFUSED', answers: [] },
  ];
  it.each(rows)('$why: $from asks $name $type', async (row) => {
    const forwarded: string[] = [];
    const r = await ask(
      server(ENDPOINTS, forwarded),
      row.from,
      row.name,
      row.type ?? 'A',
      row.klass ? { klass: row.klass } : {},
    );
    expect(r.rcode).toBe(row.rcode);
    if (row.answers) expect(data(r).sort()).toEqual([...row.answers].sort());
    if (row.aa !== undefined) expect(r.flag_aa).toBe(row.aa);
    expect(forwarded.length > 0, 'forwarded upstream').toBe(row.forwarded ?? false);
    expect(r.id).toBe(0x1234);
    if (!row.forwarded) {
      expect(r.questions?.[0]?.name).toBe(row.name.replace(/\.$/, ''));
      expect(r.flag_rd, 'RD echoed').toBe(true);
      expect(r.flag_ra, 'RA: we recurse').toBe(true);
      for (const a of r.answers ?? []) expect((a as { ttl: number }).ttl, 'never cached').toBe(0);
    }
  });

  it('passes an upstream answer back byte for byte', async () => {
    const s = server();
    const query = dnsPacket.encode({
      type: 'query',
      id: 0x0707,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type: 'A', name: 'example.org' }],
    });
    const reply = await s.handle(query, '10.1.0.9', 'udp');
    expect(reply!.equals(Buffer.concat([query.subarray(0, 2), UPSTREAM.subarray(2)]))).toBe(true);
    expect(s.counters().forwarded).toBe(1);
  });

  it('rotates the order of a shared alias on every query, every member each time', async () => {
    const s = server();
    const orders: string[][] = [];
    for (let i = 0; i < 4; i++) orders.push(data(await ask(s, '10.1.0.9', 'svc')));
    expect(orders).toEqual([
      ['10.1.0.3', '10.1.0.2'],
      ['10.1.0.2', '10.1.0.3'],
      ['10.1.0.3', '10.1.0.2'],
      ['10.1.0.2', '10.1.0.3'],
    ]);
  });

  it('sets TC over UDP when the answer is longer than the client takes, and answers in full over TCP or with EDNS', async () => {
    const many = Array.from({ length: 40 }, (_, i) =>
      ep(FRONT, `m${i}`, `10.1.0.${100 + i}`, 'h2', { aliases: ['many'] }),
    );
    const s = server([...ENDPOINTS, ...many]);
    const udp = await ask(s, '10.1.0.9', 'many');
    expect(udp.flag_tc).toBe(true);
    expect(udp.answers).toEqual([]);
    const tcp = await ask(s, '10.1.0.9', 'many', 'A', { transport: 'tcp' });
    expect(tcp.flag_tc).toBe(false);
    expect(data(tcp)).toHaveLength(40);
    const edns = await ask(s, '10.1.0.9', 'many', 'A', { edns: 4096 });
    expect(edns.flag_tc).toBe(false);
    expect(data(edns)).toHaveLength(40);
    expect(
      edns.additionals?.some((a) => a.type === 'OPT'),
      'OPT echoed (RFC 6891 §7)',
    ).toBe(true);
    expect(s.counters().truncated).toBe(1);
  });

  it('the model is read when asked: a table rebuilt after a change answers the new address', async () => {
    let endpoints = ENDPOINTS;
    let table = buildTable([FRONT, BACK], endpoints, 'h1');
    const s = new DnsServer({
      table: () => table,
      upstream: { forward: async () => ({ ok: false, reason: 'timeout' }) },
    });
    expect(data(await ask(s, '10.1.0.9', 'api'))).toEqual(['10.1.0.3']);
    endpoints = [...ENDPOINTS.filter((e) => e.name !== 'api'), ep(FRONT, 'api', '10.1.0.44', 'h2')];
    table = buildTable([FRONT, BACK], endpoints, 'h1');
    expect(data(await ask(s, '10.1.0.9', 'api'))).toEqual(['10.1.0.44']);
    table = buildTable(
      [FRONT, BACK],
      endpoints.filter((e) => e.name !== 'api'),
      'h1',
    );
    const gone = await ask(s, '10.1.0.9', 'api.front');
    expect(gone.rcode).toBe('NXDOMAIN');
    // A bare name that left goes upstream, which here does not answer: SERVFAIL.
    expect((await ask(s, '10.1.0.9', 'api')).rcode).toBe('SERVFAIL');
  });

  it('reverse names: exactly four decimal octets', () => {
    expect(reverseAddress('4.3.2.1.in-addr.arpa')).toBe('1.2.3.4');
    expect(reverseAddress('4.3.2.in-addr.arpa')).toBeUndefined();
    expect(reverseAddress('04.3.2.1.in-addr.arpa')).toBeUndefined();
    expect(reverseAddress('256.3.2.1.in-addr.arpa')).toBeUndefined();
    expect(reverseAddress('x.4.3.2.1.in-addr.arpa')).toBeUndefined();
  });
});

describe('malformed queries', () => {
  const header = (flags: number, qd = 1) => {
    const b = Buffer.alloc(12);
    b.writeUInt16BE(0xbeef, 0);
    b.writeUInt16BE(flags, 2);
    b.writeUInt16BE(qd, 4);
    return b;
  };
  it('shorter than a header: dropped', async () => {
    const s = server();
    expect(await s.handle(Buffer.from([1, 2, 3]), '10.1.0.9', 'udp')).toBeUndefined();
    expect(s.counters().dropped.runt).toBe(1);
  });
  it('a response (QR set) is never answered: no loops, no reflection', async () => {
    const s = server();
    expect(
      await s.handle(
        dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'api' }] }),
        '10.1.0.9',
        'udp',
      ),
    ).toBeUndefined();
    expect(s.counters().dropped['not-a-query']).toBe(1);
  });
  it("a question cut short: FORMERR with the query's ID", async () => {
    const s = server();
    const reply = await s.handle(Buffer.concat([header(0x0100), Buffer.from([3, 0x61, 0x62])]), '10.1.0.9', 'udp');
    const r = dnsPacket.decode(reply!) as DecodedPacket & { rcode: string };
    expect(r.rcode).toBe('FORMERR');
    expect(r.id).toBe(0xbeef);
    expect(r.flag_rd).toBe(true);
  });
  it('no question, or two: FORMERR', async () => {
    const s = server();
    const none = dnsPacket.decode((await s.handle(header(0, 0), '10.1.0.9', 'udp'))!) as DecodedPacket & {
      rcode: string;
    };
    expect(none.rcode).toBe('FORMERR');
    const two = dnsPacket.encode({
      type: 'query',
      id: 5,
      questions: [
        { type: 'A', name: 'api' },
        { type: 'A', name: 'web' },
      ],
    });
    expect(
      (dnsPacket.decode((await s.handle(two, '10.1.0.9', 'udp'))!) as DecodedPacket & { rcode: string }).rcode,
    ).toBe('FORMERR');
  });
  it('another opcode (NOTIFY, UPDATE, STATUS): NOTIMP', async () => {
    const s = server();
    for (const opcode of [2, 4, 5]) {
      const r = dnsPacket.decode((await s.handle(header(opcode << 11), '10.1.0.9', 'udp'))!) as DecodedPacket & {
        rcode: string;
        opcode: string;
      };
      expect(r.rcode).toBe('NOTIMP');
    }
    expect(s.counters().notimp).toBe(3);
  });
  it('a compression pointer loop: FORMERR, no hang', async () => {
    const s = server();
    const loop = Buffer.concat([header(0), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    const r = dnsPacket.decode((await s.handle(loop, '10.1.0.9', 'udp'))!) as DecodedPacket & { rcode: string };
    expect(r.rcode).toBe('FORMERR');
  });
});
