// A container attacking its resolver over TCP, for test/system/dns/attack.test.ts: from SOURCE, one
// connection pipelines MIB MiB of queries for slow.upstream.test (which upstream never answers) as fast
// as the resolver takes them, and LORIS connections each send a byte a second of a query that never
// completes, re-opened whenever the resolver closes them.
//   node attack-client.js ADDRESS PORT SOURCE MIB LORIS
//   → "sent BYTES" every 200 ms (bytes the kernel took), "done" once all of it was taken
import { connect } from 'node:net';
import { frame, pipelined, query } from './clients.js';

const [address = '127.0.0.1', port = '53', source = '127.0.0.2', mib = '48', lorisCount = '64'] = process.argv.slice(2);
const total = Number(mib) * 1024 * 1024;
const chunk = pipelined('slow.upstream.test', Math.floor(65_536 / frame(query('slow.upstream.test', 0)).length));

const pipe = connect({ host: address, port: Number(port), localAddress: source });
pipe.on('error', () => undefined);
pipe.on('data', () => undefined); // its SERVFAILs
let handed = 0;
const pump = () => {
  while (handed < total && !pipe.destroyed) {
    handed += chunk.length;
    if (!pipe.write(chunk)) return void pipe.once('drain', pump);
  }
};
pipe.on('connect', pump);
let reported = -1;
setInterval(() => {
  const sent = handed - pipe.writableLength;
  if (sent !== reported) process.stdout.write(`sent ${sent}\n`);
  if (sent >= total && reported < total) process.stdout.write('done\n');
  reported = sent;
}, 200);

const openLoris = () => {
  const c = connect({ host: address, port: Number(port), localAddress: source });
  // 0x0101: a 257-byte query, a byte at a time.
  const drip = setInterval(() => c.write(Buffer.from([1])), 1_000);
  c.on('connect', () => c.write(Buffer.from([1])));
  c.on('error', () => undefined);
  c.on('close', () => {
    clearInterval(drip);
    setTimeout(openLoris, 250);
  });
};
for (let i = 0; i < Number(lorisCount); i++) openLoris();
