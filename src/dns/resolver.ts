// What to do with one question from one client: answer from the network's names, or forward it
// upstream. Pure apart from the rotation counters; the server does the I/O.
//
//   scope = the networks of the asking container (records.ts scopeOf); none → REFUSED
//   1. a name or alias on a network in scope (first network first)      → its addresses, rotated
//   2. <label>.<network> for a network in scope                          → <label> on that network, else NXDOMAIN
//   3. a.b.c.d.in-addr.arpa inside a subnet in scope                      → PTR <name>.<network>, else NXDOMAIN
//   4. anything else                                                      → forwarded unchanged
// A name we own answers A (and ANY) with addresses, and every other type with no data (NOERROR):
// its AAAA must not go upstream, where it would leak the name and wait for a timeout.

import type { Answer, Question } from 'dns-packet';
import { LOCAL_TTL, RCODE, type LocalAnswer } from './wire.js';
import { cidrContains, parseIpv4 } from '../model/ipv4.js';
import type { DnsTable, NetworkNames } from './records.js';

export type Resolution =
  { kind: 'local'; answer: LocalAnswer; network: string } | { kind: 'forward' } | { kind: 'refused' };

const REVERSE_SUFFIX = '.in-addr.arpa';
/** Past this many distinct names the rotation counters start over (a bound on memory, not a behaviour). */
const MAX_ROTATION_KEYS = 65_536;

export class Resolver {
  readonly #rotation = new Map<string, number>();

  resolve(table: DnsTable, source: string, question: Question): Resolution {
    const scope = table.scopeOf(source);
    if (scope.length === 0) return { kind: 'refused' };
    const qname = normalize(question.name);
    if (question.class !== undefined && question.class !== 'IN' && question.class !== 'ANY') return { kind: 'forward' };

    for (const net of scope) {
      const addresses = net.names.get(qname);
      if (addresses) return this.#addresses(net, qname, question, addresses);
    }
    for (const net of scope) {
      if (qname === net.domain) return local(net, RCODE.NOERROR, []);
      if (!qname.endsWith(`.${net.domain}`)) continue;
      const label = qname.slice(0, -(net.domain.length + 1));
      const addresses = net.names.get(label);
      return addresses ? this.#addresses(net, label, question, addresses) : local(net, RCODE.NXDOMAIN, []);
    }
    const reverse = reverseAddress(qname);
    if (reverse) {
      const address = parseIpv4(reverse);
      const net = address === undefined ? undefined : scope.find((n) => cidrContains(n.subnet, address));
      if (net) {
        const target = net.reverse.get(reverse);
        if (!target) return local(net, RCODE.NXDOMAIN, []);
        const answers: Answer[] = wants(question, 'PTR')
          ? [{ type: 'PTR', name: question.name, ttl: LOCAL_TTL, class: 'IN', data: target }]
          : [];
        return local(net, RCODE.NOERROR, answers);
      }
    }
    return { kind: 'forward' };
  }

  /** Every address behind the name, each query starting one further along (round robin). */
  #addresses(net: NetworkNames, label: string, question: Question, addresses: readonly string[]): Resolution {
    if (!wants(question, 'A')) return local(net, RCODE.NOERROR, []);
    const key = `${net.network.id}/${label}`;
    const turn = this.#rotation.get(key) ?? 0;
    if (this.#rotation.size >= MAX_ROTATION_KEYS && !this.#rotation.has(key)) this.#rotation.clear();
    this.#rotation.set(key, (turn + 1) % addresses.length);
    const start = turn % addresses.length;
    const rotated = [...addresses.slice(start), ...addresses.slice(0, start)];
    return local(
      net,
      RCODE.NOERROR,
      rotated.map((ip) => ({ type: 'A', name: question.name, ttl: LOCAL_TTL, class: 'IN', data: ip })),
    );
  }
}

/** The question asks for `type` (or ANY, RFC 1035 §3.2.3 QTYPE 255, which dns-packet's types do not list). */
function wants(question: Question, type: 'A' | 'PTR'): boolean {
  const asked: string = question.type;
  return asked === type || asked === 'ANY';
}

function local(net: NetworkNames, rcode: LocalAnswer['rcode'], answers: Answer[]): Resolution {
  return { kind: 'local', answer: { rcode, answers, authoritative: true }, network: net.network.name };
}

/** Lower case, no trailing dot (RFC 4343: names compare case-insensitively). */
export function normalize(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/** d.c.b.a.in-addr.arpa → a.b.c.d; anything shorter or longer is not one address (RFC 1035 §3.5). */
export function reverseAddress(qname: string): string | undefined {
  if (!qname.endsWith(REVERSE_SUFFIX)) return undefined;
  const octets = qname.slice(0, -REVERSE_SUFFIX.length).split('.');
  if (octets.length !== 4 || octets.some((o) => !/^(0|[1-9]\d{0,2})$/.test(o) || Number(o) > 255)) return undefined;
  return octets.reverse().join('.');
}
