// The DNS wire as the embedded resolver uses it. Parsing and encoding are dns-packet's; this file
// names the numbers (each with its RFC section) and turns a datagram into a query or a drop.
//
//   RFC 1035 §4.1.1 header (12 bytes)
//    0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
//   |                      ID                       |
//   |QR|  Opcode   |AA|TC|RD|RA| Z|AD|CD|   RCODE   |
//   |                QDCOUNT | ANCOUNT | NSCOUNT | ARCOUNT (16 bits each)
//   then the question (QNAME QTYPE QCLASS), answer, authority and additional sections.

import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Packet, Question } from 'dns-packet';

export { RESOLVER_ADDRESS } from '../model/resolver.js';
/** RFC 1035 §4.2.1 (UDP) and §4.2.2 (TCP). */
export const DNS_PORT = 53;

/** RFC 1035 §4.1.1. */
export const HEADER_LENGTH = 12;
/** RFC 1035 §4.2.1: a UDP message without EDNS carries at most 512 bytes; longer answers set TC. */
export const UDP_PLAIN_MAX = 512;
/**
 * RFC 6891 §6.2.5: the requestor's advertised UDP payload size; values below 512 are treated as 512.
 * We cap what we send at 1232 bytes (DNS flag day 2020: no IP fragmentation on a 1280-byte IPv6 path).
 */
export const UDP_EDNS_MAX = 1232;
/** RFC 1035 §4.2.2: a TCP message is preceded by a two-byte length. */
export const TCP_LENGTH_PREFIX = 2;
export const TCP_MESSAGE_MAX = 0xffff;
/** Answers from the network's own records are never cached: a moved container resolves anew at once. */
export const LOCAL_TTL = 0;

/** RFC 1035 §4.1.1 / RFC 6895 §2.3. */
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export type Rcode = (typeof RCODE)[keyof typeof RCODE];

const FLAG_QR = 0x8000;
const OPCODE_SHIFT = 11;
const OPCODE_MASK = 0xf;
/** RFC 1035 §4.1.1: opcode 0 is a standard query. */
const OPCODE_QUERY = 0;

/** Why a datagram got no answer of its own (counted by the server). */
export type DnsDrop = 'runt' | 'not-a-query' | 'oversize';

export type ParsedQuery =
  | { ok: true; query: DecodedPacket; question: Question }
  | { ok: false; drop: DnsDrop }
  /** Worth a reply that carries only the header's ID and an error code. */
  | { ok: false; reply: Buffer; rcode: Rcode };

/**
 * A datagram → one standard query with exactly one question, or what to do instead. Never throws.
 * Shorter than a header: drop (nothing to answer to). QR set: drop (never answer an answer: no
 * loops, no reflection). Not opcode QUERY: NOTIMP. Unparseable, not one question, or a question that
 * does not re-encode to its own bytes: FORMERR.
 */
export function parseQuery(message: Buffer): ParsedQuery {
  if (message.length < HEADER_LENGTH) return { ok: false, drop: 'runt' };
  if (message.length > TCP_MESSAGE_MAX) return { ok: false, drop: 'oversize' };
  // The fixed header is all there is to trust in a message the parser refused (RFC 1035 §4.1.1).
  const id = message.readUInt16BE(0);
  const flags = message.readUInt16BE(2);
  if (flags & FLAG_QR) return { ok: false, drop: 'not-a-query' };
  const opcode = (flags >> OPCODE_SHIFT) & OPCODE_MASK;
  if (opcode !== OPCODE_QUERY)
    return { ok: false, reply: headerOnlyReply(id, flags, RCODE.NOTIMP), rcode: RCODE.NOTIMP };
  let query: DecodedPacket;
  try {
    query = dnsPacket.decode(message);
  } catch {
    return { ok: false, reply: headerOnlyReply(id, flags, RCODE.FORMERR), rcode: RCODE.FORMERR };
  }
  const question = query.questions?.[0];
  if (query.questions?.length !== 1 || !question || typeof question.name !== 'string') {
    return { ok: false, reply: headerOnlyReply(id, flags, RCODE.FORMERR), rcode: RCODE.FORMERR };
  }
  // The question must come back in the answer exactly as asked (RFC 1035 §4.1.2). A QNAME that does
  // not re-encode to its own bytes (a compression pointer where nothing precedes it, a label that is
  // not text or holds a dot) cannot be echoed faithfully, and no name of ours looks like that.
  const asked = message.subarray(HEADER_LENGTH);
  const echoed = dnsPacket.encode({ type: 'query', id, questions: [question] }).subarray(HEADER_LENGTH);
  if (asked.length < echoed.length || !asked.subarray(0, echoed.length).equals(echoed)) {
    return { ok: false, reply: headerOnlyReply(id, flags, RCODE.FORMERR), rcode: RCODE.FORMERR };
  }
  return { ok: true, query, question };
}

/** An answer with no sections: the query's ID, opcode and RD echoed (RFC 1035 §4.1.1), RA set, and rcode. */
function headerOnlyReply(id: number, queryFlags: number, rcode: Rcode): Buffer {
  const keep = queryFlags & ((OPCODE_MASK << OPCODE_SHIFT) | dnsPacket.RECURSION_DESIRED);
  return dnsPacket.encode({
    type: 'response',
    id,
    flags: keep | dnsPacket.RECURSION_AVAILABLE | rcode,
    questions: [],
    answers: [],
  });
}

/** The EDNS OPT record of a query (RFC 6891 §6.1.1), if any. */
export function ednsOf(query: DecodedPacket): { udpPayloadSize: number } | undefined {
  const opt = query.additionals?.find((a) => a.type === 'OPT') as { udpPayloadSize?: number } | undefined;
  return opt ? { udpPayloadSize: opt.udpPayloadSize ?? UDP_PLAIN_MAX } : undefined;
}

/** How many bytes a UDP answer to this query may have (RFC 1035 §4.2.1, RFC 6891 §6.2.5). */
export function udpLimit(query: DecodedPacket): number {
  const edns = ednsOf(query);
  if (!edns) return UDP_PLAIN_MAX;
  return Math.min(Math.max(edns.udpPayloadSize, UDP_PLAIN_MAX), UDP_EDNS_MAX);
}

export interface LocalAnswer {
  rcode: Rcode;
  answers: Answer[];
  /** AA: the name is the network's (RFC 1035 §4.1.1). */
  authoritative: boolean;
}

/**
 * Encodes our own answer to `query`. Over UDP an answer longer than the client takes is sent with
 * TC and no records (RFC 2181 §9: the client retries over TCP). An OPT record is echoed when the
 * query had one (RFC 6891 §7).
 */
export function encodeAnswer(
  query: DecodedPacket,
  question: Question,
  answer: LocalAnswer,
  transport: 'udp' | 'tcp',
): Buffer {
  const rd = (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
  const flags =
    rd | dnsPacket.RECURSION_AVAILABLE | (answer.authoritative ? dnsPacket.AUTHORITATIVE_ANSWER : 0) | answer.rcode;
  const additionals: Answer[] = ednsOf(query)
    ? [
        {
          type: 'OPT',
          name: '.',
          udpPayloadSize: UDP_EDNS_MAX,
          extendedRcode: 0,
          ednsVersion: 0,
          flags: 0,
          flag_do: false,
          options: [],
        },
      ]
    : [];
  const packet: Packet = {
    type: 'response',
    id: query.id ?? 0,
    flags,
    questions: [question],
    answers: answer.answers,
    additionals,
  };
  const full = dnsPacket.encode(packet);
  const limit = transport === 'udp' ? udpLimit(query) : TCP_MESSAGE_MAX;
  if (full.length <= limit) return full;
  return dnsPacket.encode({ ...packet, flags: flags | dnsPacket.TRUNCATED_RESPONSE, answers: [] });
}

/** SERVFAIL for a query we could not get an answer to (upstream silent or unreachable). */
export function encodeFailure(query: DecodedPacket, question: Question, rcode: Rcode): Buffer {
  return encodeAnswer(query, question, { rcode, answers: [], authoritative: false }, 'tcp');
}

/** What an upstream sent back, checked to be the answer to `query` before it is passed on unchanged. */
export function isAnswerTo(message: Buffer, query: DecodedPacket): boolean {
  if (message.length < HEADER_LENGTH) return false;
  return message.readUInt16BE(0) === (query.id ?? 0) && (message.readUInt16BE(2) & FLAG_QR) !== 0;
}
