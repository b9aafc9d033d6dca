// Sends a seeded stream of malformed DNS datagrams (malformed.ts) and TCP frames to a resolver, as a
// program run inside a container's namespace by test/system/netns/dns.test.ts:
//   node fuzz-sender.js ADDRESS PORT COUNT SEED     → prints "sent N udp, M tcp"
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { Prng } from '../support/prng.js';
import { malformed } from './malformed.js';

const [address = '169.254.53.53', port = '53', count = '2000', seed = '1'] = process.argv.slice(2);
const p = new Prng(Number(seed));
const udp = createSocket('udp4');
udp.on('message', () => undefined); // answers (FORMERR, NOTIMP, ...) are not looked at here
let sent = 0;
for (let i = 0; i < Number(count); i++) {
  await new Promise<void>((resolve) => udp.send(malformed(p), Number(port), address, () => resolve()));
  sent++;
  if (i % 200 === 199) await new Promise((r) => setTimeout(r, 10)); // bounded rate: a stream, not a flood
}
let frames = 0;
for (let i = 0; i < 20; i++) {
  await new Promise<void>((resolve) => {
    const c = connect(Number(port), address);
    const done = () => resolve();
    c.on('error', done);
    c.on('close', done);
    c.on('data', () => undefined);
    c.on('connect', () => {
      const body = malformed(p);
      const len = Buffer.alloc(2);
      len.writeUInt16BE(p.int(4) === 0 ? 0 : body.length + p.int(3) * 50);
      c.write(Buffer.concat([len, body]));
      frames++;
      setTimeout(() => c.destroy(), 100);
    });
  });
}
udp.close();
process.stdout.write(`sent ${sent} udp, ${frames} tcp\n`);
