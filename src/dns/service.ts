// The embedded DNS of one gateway: answers the containers of this host, for every network they are
// on, from the agent's model (which the etcd watch keeps current: no polling), and forwards the rest
// to the host's resolvers. main.ts wires it: start() after the gateway plumbed the host, the agent
// calls attached()/detached() around each local container and invalidate() on every model change.

import type { EndpointRecord, NetworkRecord } from '../store/types.js';
import { buildTable, sandboxKey, type DnsTable } from './records.js';
import type { DnsPlumbing } from './plumbing.js';
import { ResolvConfWriter, resolvConfText, type ResolvConfOptions } from './plumbing.js';
import { DnsServer, type DnsCounters } from './server.js';
import { Upstream, type UpstreamOptions } from './upstream.js';

/** What the resolver reads: the agent's model as etcd has it now. */
export interface DnsModel {
  networks(): readonly NetworkRecord[];
  endpoints(): readonly EndpointRecord[];
}

export interface DnsServiceOptions {
  readonly hostId: string;
  readonly model: DnsModel;
  readonly plumbing: DnsPlumbing;
  readonly upstream?: UpstreamOptions;
  readonly resolvConf?: ResolvConfOptions;
  /** The vtep netns's name: it is never a container, so a resolv.conf of veil's for it is an orphan (removed at start). */
  readonly vtepNetns?: string;
  readonly log?: (level: 'info' | 'warn' | 'error', event: string, fields?: Record<string, unknown>) => void;
}

export interface DnsStatus {
  listening: boolean;
  address: string;
  upstream: string[];
  counters: DnsCounters;
}

export class DnsService {
  readonly #o: DnsServiceOptions;
  readonly #upstream: Upstream;
  readonly #server: DnsServer;
  readonly #resolvConf: ResolvConfWriter;
  #table: DnsTable | undefined;
  #listening = false;
  /** Sandboxes whose resolv.conf we wrote, by sandbox key. */
  readonly #written = new Map<string, EndpointRecord['sandbox']>();

  constructor(options: DnsServiceOptions) {
    this.#o = options;
    this.#upstream = new Upstream(options.upstream);
    this.#resolvConf = new ResolvConfWriter(options.resolvConf);
    this.#server = new DnsServer({
      table: () => this.#currentTable(),
      upstream: this.#upstream,
      ...(options.log ? { log: options.log } : {}),
    });
  }

  /** Plumbs the resolver address in the vtep netns and starts answering there. */
  async start(): Promise<void> {
    if (this.#o.vtepNetns) {
      // Only a file that carries veil's mark goes (docs/dns.md "resolv.conf"); a saved original comes back.
      await this.#resolvConf
        .remove({ netns: `/run/netns/${this.#o.vtepNetns}` })
        .catch((err: Error) =>
          this.#log('warn', "dns: could not remove veil's resolv.conf of the vtep netns", { error: err.message }),
        );
    }
    await this.#o.plumbing.ensureHost();
    const { udp, tcp } = await this.#o.plumbing.openSockets();
    this.#server.listenUdp(udp);
    this.#server.listenTcp(tcp);
    this.#listening = true;
    this.#log('info', 'embedded DNS listening', {
      address: this.#o.plumbing.resolverAddress,
      upstream: this.#upstream.servers().map((s) => s.address),
    });
  }

  /** Stops answering; with `unplumb` (the containers lose their veths too) removes the resolv.conf files written. */
  async stop(options: { unplumb?: boolean } = {}): Promise<void> {
    this.#listening = false;
    await this.#server.close();
    if (options.unplumb) {
      for (const sandbox of this.#written.values())
        if (sandbox) await this.#resolvConf.remove(sandbox).catch(() => undefined);
      this.#written.clear();
    }
  }

  /** The model changed: the next query rebuilds the names from it. */
  invalidate(): void {
    this.#table = undefined;
  }

  /**
   * A container of this host was attached to `network`: its route and neighbour entry to the
   * resolver, and its resolv.conf (search: every network it is on here). Rejects on failure.
   */
  async attached(endpoint: EndpointRecord, network: NetworkRecord): Promise<void> {
    this.invalidate();
    if (!endpoint.sandbox) return;
    await this.#o.plumbing.ensureNetwork(network.vni, network.ipam.subnet);
    await this.#o.plumbing.attachEndpoint({
      vni: network.vni,
      netns: 'netns' in endpoint.sandbox ? { path: endpoint.sandbox.netns } : { pid: endpoint.sandbox.pid },
      ipv4: endpoint.ipv4,
      mac: endpoint.mac,
      ...(endpoint.ifName ? { ifName: endpoint.ifName } : {}),
    });
    await this.#writeResolvConf(endpoint, [network]);
  }

  /**
   * A container of this host left `network` (undefined: the network is gone, and its bridge with it).
   * Never rejects: what cannot be undone is logged; the container has lost its veth anyway.
   */
  async detached(endpoint: EndpointRecord, network: NetworkRecord | undefined): Promise<void> {
    this.invalidate();
    if (!endpoint.sandbox) return;
    try {
      if (network) await this.#o.plumbing.detachEndpoint(network.vni, endpoint.ipv4);
      const key = sandboxKey(endpoint);
      const remaining = this.#sandboxNetworks(key).filter((n) => n.id !== endpoint.networkId);
      if (remaining.length > 0) {
        await this.#writeResolvConf(endpoint, remaining);
      } else {
        await this.#resolvConf.remove(endpoint.sandbox);
        this.#written.delete(key);
      }
    } catch (err) {
      this.#log('warn', "dns: could not undo a container's resolver configuration", {
        endpoint: endpoint.name,
        error: (err as Error).message,
      });
    }
  }

  status(): DnsStatus {
    return {
      listening: this.#listening,
      address: this.#o.plumbing.resolverAddress,
      upstream: this.#upstream.servers().map((s) => s.address),
      counters: this.#server.counters(),
    };
  }

  /** For tests and the agent-less: answer one message as the server would. */
  handle(message: Buffer, source: string, transport: 'udp' | 'tcp' = 'udp'): Promise<Buffer | undefined> {
    return this.#server.handle(message, source, transport);
  }

  async #writeResolvConf(endpoint: EndpointRecord, atLeast: readonly NetworkRecord[]): Promise<void> {
    const sandbox = endpoint.sandbox!;
    const key = sandboxKey(endpoint);
    const networks = [...atLeast];
    for (const n of this.#sandboxNetworks(key)) if (!networks.some((m) => m.id === n.id)) networks.push(n);
    networks.sort((a, b) => (a.name < b.name ? -1 : 1));
    const path = await this.#resolvConf.write(
      sandbox,
      resolvConfText(
        this.#o.plumbing.resolverAddress,
        networks.map((n) => n.name),
      ),
    );
    if (path) {
      this.#written.set(key, sandbox);
    } else {
      this.#log(
        'info',
        'dns: no resolv.conf written (a netns path outside /run/netns); point the container at the resolver',
        { endpoint: endpoint.name, address: this.#o.plumbing.resolverAddress },
      );
    }
  }

  /** The networks a container of this host is on, as the model says now. */
  #sandboxNetworks(key: string): NetworkRecord[] {
    const networks = new Map(this.#o.model.networks().map((n) => [n.id, n]));
    const out: NetworkRecord[] = [];
    for (const ep of this.#o.model.endpoints()) {
      if (ep.hostId !== this.#o.hostId || sandboxKey(ep) !== key) continue;
      const n = networks.get(ep.networkId);
      if (n && !out.includes(n)) out.push(n);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  #currentTable(): DnsTable {
    this.#table ??= buildTable(this.#o.model.networks(), this.#o.model.endpoints(), this.#o.hostId);
    return this.#table;
  }

  #log(level: 'info' | 'warn' | 'error', event: string, fields?: Record<string, unknown>): void {
    this.#o.log?.(level, event, fields);
  }
}
