// The embedded resolver as a process of its own, for test/system/dns/attack.test.ts to measure from
// outside (its RSS in /proc): a DnsServer on ADDRESS:PORT (UDP and TCP) for a network on 127.0.0.0/8
// ("web" is 127.0.0.2), forwarding to a FakeUpstream on ADDRESS (slow.upstream.test never answered).
//   node attack-resolver.js ADDRESS PORT   → "listening", then "load {…}" (its gauges) every 200 ms
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { buildTable } from '../../src/dns/records.js';
import { DnsServer } from '../../src/dns/server.js';
import { Upstream } from '../../src/dns/upstream.js';
import type { EndpointRecord } from '../../src/store/types.js';
import { FakeUpstream } from './upstream-fixture.js';
import { networkRecord } from './network-record.js';

const [address = '127.0.0.1', port = '53'] = process.argv.slice(2);
const upstream = await new FakeUpstream().start(address, 0);
const network = networkRecord('loopnet', '127.0.0.0/8', 9);
const web: EndpointRecord = {
  id: 'web',
  networkId: network.id,
  name: 'web',
  aliases: [],
  hostId: 'h1',
  mac: '02:42:7f:00:00:02',
  ipv4: '127.0.0.2',
};
const table = buildTable([network], [web], 'h1');
const server = new DnsServer({
  table: () => table,
  upstream: new Upstream({ servers: [{ address, port: upstream.port }] }),
});
const udp = createSocket('udp4');
await new Promise<void>((resolve) => udp.bind(Number(port), address, () => resolve()));
const tcp = createServer();
await new Promise<void>((resolve) => tcp.listen(Number(port), address, () => resolve()));
server.listenUdp(udp);
server.listenTcp(tcp);
process.stdout.write(`listening ${address}:${port}\n`);
setInterval(() => process.stdout.write(`load ${JSON.stringify(server.load())}\n`), 200);
