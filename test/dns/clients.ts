// DNS clients for the resolver's tests: queries, length-prefixed frames (RFC 1035 §4.2.2), a stream of
// pipelined queries, and one-shot questions over UDP and TCP from a chosen source address.
import { createSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import dnsPacket from 'dns-packet';
import type { DecodedPacket } from 'dns-packet';

export type Answer = DecodedPacket & { rcode: string };

export const query = (name: string, id: number, type: 'A' | 'AAAA' = 'A'): Buffer =>
  dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });

export const frame = (message: Buffer): Buffer => {
  const prefix = Buffer.alloc(2);
  prefix.writeUInt16BE(message.length);
  return Buffer.concat([prefix, message]);
};

/** `count` framed queries for `name`, IDs first, first + 1, … (mod 2^16), back to back. */
export function pipelined(name: string, count: number, first = 0): Buffer {
  const one = frame(query(name, 0));
  const all = Buffer.alloc(one.length * count);
  for (let i = 0; i < count; i++) {
    one.copy(all, i * one.length);
    all.writeUInt16BE((first + i) & 0xffff, i * one.length + 2);
  }
  return all;
}

/** The addresses of an answer ([] for none, or no answer at all). */
export const addresses = (answer: DecodedPacket | undefined): string[] =>
  (answer?.answers ?? []).map((a) => (a as { data: string }).data);

/** A TCP connection from `source` (a local address) that has connected. */
export function connectFrom(host: string, port: number, source: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const c = connect({ host, port, localAddress: source });
    c.once('error', reject);
    c.once('connect', () => {
      c.off('error', reject);
      c.on('error', () => undefined);
      resolve(c);
    });
  });
}

/** Collects the length-prefixed answers arriving on `c` (and starts reading it). */
export function collectAnswers(c: Socket): { answers: Answer[]; closed: () => boolean } {
  const answers: Answer[] = [];
  let closed = false;
  let buf: Buffer = Buffer.alloc(0);
  c.on('close', () => (closed = true));
  c.on('data', (d: Buffer) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      answers.push(dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))) as Answer);
      buf = buf.subarray(2 + buf.readUInt16BE(0));
    }
  });
  return { answers, closed: () => closed };
}

/**
 * One question on an open connection: its answer, or undefined when the connection closes first or
 * nothing came within `timeoutMs` (a client that gives up).
 */
export function askOn(c: Socket, name: string, id: number, timeoutMs = 5_000): Promise<Answer | undefined> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    const done = (a: Answer | undefined) => {
      clearTimeout(timer);
      c.off('data', onData);
      c.off('close', onClose);
      resolve(a);
    };
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0))
        done(dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))) as Answer);
    };
    const onClose = () => done(undefined);
    const timer = setTimeout(() => done(undefined), timeoutMs);
    c.on('data', onData);
    c.on('close', onClose);
    if (c.destroyed) onClose();
    else c.write(frame(query(name, id)));
  });
}

/** A question over a fresh TCP connection from `source`, closed afterwards. */
export async function askTcp(
  host: string,
  port: number,
  source: string,
  name: string,
  id: number,
  timeoutMs = 5_000,
): Promise<Answer | undefined> {
  let c: Socket;
  try {
    c = await connectFrom(host, port, source);
  } catch {
    return undefined;
  }
  try {
    return await askOn(c, name, id, timeoutMs);
  } finally {
    c.destroy();
  }
}

/** A question over UDP from `source`, like a stub resolver: up to `tries` sends, `timeoutMs` apart. */
export function askUdp(
  host: string,
  port: number,
  source: string,
  name: string,
  id: number,
  { tries = 3, timeoutMs = 1_000 } = {},
): Promise<Answer | undefined> {
  return new Promise((resolve) => {
    const c = createSocket('udp4');
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    const done = (a: Answer | undefined) => {
      clearTimeout(timer);
      c.close();
      resolve(a);
    };
    const send = () => {
      if (sent++ === tries) return done(undefined);
      c.send(query(name, id), port, host);
      timer = setTimeout(send, timeoutMs);
    };
    c.on('message', (m) => {
      const a = dnsPacket.decode(m) as Answer;
      if (a.id === id) done(a);
    });
    c.bind(0, source, send);
  });
}
