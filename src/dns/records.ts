// The names of every network, as the agent's model (fed by the etcd watch) has them. Pure: built
// from records, queried by the resolver. Rebuilt when the model changes, never by polling.
//
// Per network:   <name> and each alias → the endpoint's IPv4 (an alias may stand for several)
//                <name>.<network>, <alias>.<network> → the same (the network's own domain)
//                d.c.b.a.in-addr.arpa → <name>.<network> for each address in use (RFC 1035 §3.5)
// Which networks a query sees is decided by who asks (scopeOf), never by what it asks.

import { cidrContains, parseCidr, parseIpv4, type Cidr } from '../model/ipv4.js';
import type { EndpointRecord, NetworkRecord } from '../store/types.js';

export interface NetworkNames {
  readonly network: NetworkRecord;
  /** The network's domain: its name, lower-cased (names compare case-insensitively, RFC 4343). */
  readonly domain: string;
  readonly subnet: Cidr;
  /** Lower-cased name or alias → addresses, in a stable order (endpoint id). */
  readonly names: ReadonlyMap<string, readonly string[]>;
  /** Address → the endpoint's canonical name, `<name>.<network>`. */
  readonly reverse: ReadonlyMap<string, string>;
}

export interface DnsTable {
  readonly networks: readonly NetworkNames[];
  /**
   * The networks whose names a client at `source` may learn: the network whose subnet holds the
   * address (subnets never overlap), then every other network the same container (sandbox) of
   * this host is connected to. Empty: the address is on no network (REFUSED).
   */
  scopeOf(source: string): NetworkNames[];
}

export function buildTable(
  networks: readonly NetworkRecord[],
  endpoints: readonly EndpointRecord[],
  hostId: string,
): DnsTable {
  const byId = new Map<string, NetworkNames>();
  const sorted = [...endpoints].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const network of networks) {
    const subnet = parseCidr(network.ipam.subnet);
    if (!subnet) continue;
    byId.set(network.id, { network, domain: network.name.toLowerCase(), subnet, names: new Map(), reverse: new Map() });
  }
  // Local endpoints by address (who is asking) and by sandbox (what else that container is on).
  const localByAddress = new Map<string, EndpointRecord[]>();
  const sandboxNetworks = new Map<string, Set<string>>();
  for (const ep of sorted) {
    const net = byId.get(ep.networkId);
    if (!net || parseIpv4(ep.ipv4) === undefined) continue;
    const names = net.names as Map<string, string[]>;
    for (const label of new Set([ep.name, ...ep.aliases].map((n) => n.toLowerCase()))) {
      const list = names.get(label);
      if (list) list.push(ep.ipv4);
      else names.set(label, [ep.ipv4]);
    }
    (net.reverse as Map<string, string>).set(ep.ipv4, `${ep.name}.${net.network.name}`);
    if (ep.hostId === hostId && ep.sandbox) {
      const list = localByAddress.get(ep.ipv4);
      if (list) list.push(ep);
      else localByAddress.set(ep.ipv4, [ep]);
      const key = sandboxKey(ep);
      const set = sandboxNetworks.get(key);
      if (set) set.add(ep.networkId);
      else sandboxNetworks.set(key, new Set([ep.networkId]));
    }
  }
  const all = [...byId.values()];
  return {
    networks: all,
    scopeOf(source) {
      const address = parseIpv4(source);
      if (address === undefined) return [];
      const own = all.find((n) => cidrContains(n.subnet, address));
      if (!own) return [];
      const scope = [own];
      for (const ep of localByAddress.get(source) ?? []) {
        if (ep.networkId !== own.network.id) continue;
        const others = [...(sandboxNetworks.get(sandboxKey(ep)) ?? [])].sort();
        for (const id of others) {
          const n = byId.get(id);
          if (n && !scope.includes(n)) scope.push(n);
        }
      }
      return scope;
    },
  };
}

/** A container's identity on its host: the same namespace on several networks is one container. */
export function sandboxKey(ep: EndpointRecord): string {
  if (!ep.sandbox) return `record:${ep.networkId}/${ep.id}`;
  return `${ep.hostId}|${'netns' in ep.sandbox ? `netns:${ep.sandbox.netns}` : `pid:${ep.sandbox.pid}`}`;
}
