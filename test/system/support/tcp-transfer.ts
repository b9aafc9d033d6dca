// TCP bulk transfers between two namespaces of a test bed, checked end to end: the sender streams a
// deterministic pseudo-random byte stream (AES-128-CTR keystream of a seed), the receiver hashes
// what arrives, and the caller compares both with the stream computed here, in the test process.
// Small Node scripts only (`node -e`), so nothing beyond Node and iproute2 is needed in a namespace.
import { createCipheriv, createHash } from 'node:crypto';
import type { Bed, BedProcess } from '../netns/bed.js';

const CHUNK = 64 * 1024;

/** node -e <script> <host> <port>: accepts one connection, prints "listening", then {bytes, sha256, ms}. */
const RECEIVER = `
const net = require('node:net');
const { createHash } = require('node:crypto');
const [host, port] = process.argv.slice(1);
const server = net.createServer((s) => {
  server.close();
  const hash = createHash('sha256');
  let bytes = 0;
  const t0 = process.hrtime.bigint();
  s.on('data', (d) => { hash.update(d); bytes += d.length; });
  s.on('end', () => {
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    console.log(JSON.stringify({ bytes, sha256: hash.digest('hex'), ms }));
    s.end();
  });
  s.on('close', () => process.exit(0));
  s.on('error', (e) => { console.error('receiver: ' + e.message); process.exit(2); });
});
server.on('error', (e) => { console.error('receiver: ' + e.message); process.exit(2); });
server.listen(Number(port), host, () => console.log('listening'));
`;

/** node -e <script> <host> <port> <bytes> <seed>: streams the keystream, prints {bytes, sha256} once closed. */
const SENDER = `
const net = require('node:net');
const { createCipheriv, createHash } = require('node:crypto');
const [host, port, total, seed] = process.argv.slice(1);
const key = createHash('sha256').update('veil-transfer:' + seed).digest().subarray(0, 16);
const ctr = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
const zero = Buffer.alloc(${CHUNK});
const hash = createHash('sha256');
let left = Number(total);
const s = net.connect({ host, port: Number(port) });
s.setNoDelay(false);
const pump = () => {
  while (left > 0) {
    const n = Math.min(left, zero.length);
    const chunk = ctr.update(zero.subarray(0, n));
    hash.update(chunk);
    left -= n;
    if (!s.write(chunk)) { s.once('drain', pump); return; }
  }
  s.end();
};
s.on('connect', pump);
s.on('error', (e) => { console.error('sender: ' + e.message); process.exit(2); });
s.on('close', (hadError) => {
  console.log(JSON.stringify({ bytes: Number(total) - left, sha256: hash.digest('hex') }));
  process.exit(hadError ? 1 : 0);
});
`;

/** The stream the sender produces for (bytes, seed): its sha256, computed independently of both scripts. */
export function expectedSha256(bytes: number, seed: string): string {
  const key = createHash('sha256')
    .update('veil-transfer:' + seed)
    .digest()
    .subarray(0, 16);
  const ctr = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zero = Buffer.alloc(CHUNK);
  const hash = createHash('sha256');
  for (let left = bytes; left > 0; left -= CHUNK) hash.update(ctr.update(zero.subarray(0, Math.min(left, CHUNK))));
  return hash.digest('hex');
}

export interface TransferOptions {
  fromNs: string;
  toNs: string;
  toIp: string;
  bytes: number;
  seed: string;
  port?: number;
  timeoutMs?: number;
}

export interface TransferResult {
  sent: { bytes: number; sha256: string };
  received: { bytes: number; sha256: string; ms: number };
  expectedSha256: string;
  /** Decimal megabytes per second, measured at the receiver (first byte accepted to FIN). */
  mbPerSecond: number;
}

/** Runs one transfer; both processes are stopped whatever happens. Rejects on timeout or a process failure. */
export async function tcpTransfer(bed: Bed, o: TransferOptions): Promise<TransferResult> {
  const port = o.port ?? 5201;
  const timeoutMs = o.timeoutMs ?? 60_000;
  const expected = expectedSha256(o.bytes, o.seed);
  const procs: BedProcess[] = [];
  try {
    const receiver = bed.spawn(o.toNs, [process.execPath, '-e', RECEIVER, o.toIp, String(port)]);
    procs.push(receiver);
    await receiver.waitFor(/^listening$/, 10_000);
    const sender = bed.spawn(o.fromNs, [process.execPath, '-e', SENDER, o.toIp, String(port), String(o.bytes), o.seed]);
    procs.push(sender);
    const [sentLine, receivedLine] = await Promise.all([
      sender.waitFor(/^\{/, timeoutMs),
      receiver.waitFor(/^\{/, timeoutMs),
    ]);
    const sent = JSON.parse(sentLine) as TransferResult['sent'];
    const received = JSON.parse(receivedLine) as TransferResult['received'];
    return { sent, received, expectedSha256: expected, mbPerSecond: received.bytes / 1e6 / (received.ms / 1e3) };
  } finally {
    await Promise.all(procs.map((p) => p.stop(1_000)));
  }
}

export const MiB = 1024 * 1024;
