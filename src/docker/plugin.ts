import { VeilError } from '../errors.js';
import { formatIpv4, overlaySubnetRefusal, parseCidr, parseIpv4, type Cidr } from '../model/ipv4.js';
import {
  isWindows,
  optionEnabled,
  windowsEndpointWarning,
  windowsHosts,
  windowsNetworkWarning,
} from '../model/windows.js';
import type { EndpointRecord, NetworkRecord, Sandbox, Store } from '../store/types.js';
import type { DockerEngine } from './engine.js';
import {
  ADDRESS_SPACE,
  GATEWAY_ADDRESS,
  GENERIC_OPTIONS,
  INTERFACE_PREFIX,
  INTERNAL_OPTION,
  IPV6_OPTION,
  NETWORK_OPTIONS,
  REQUEST_ADDRESS_TYPE,
  ROUTE_CONNECTED,
  type CreateEndpointRequest,
  type CreateNetworkRequest,
  type EndpointRequest,
  type EngineNetwork,
  type JoinRequest,
  type JoinResponse,
  type ReleaseAddressRequest,
  type RequestAddressRequest,
  type RequestPoolRequest,
} from './protocol.js';

/*
 * The Docker network and IPAM driver "veil" (docs/docker.md). Docker 20.10 without swarm runs a
 * driver of local scope: `docker network create` runs on every host, and each host's Docker network
 * maps onto the one veil network of that name in etcd. Addresses come from veil's IPAM, so two hosts
 * never hand out one address. Each method answers one protocol call or throws a VeilError, which the
 * HTTP layer (src/api/docker-plugin.ts) turns into {"Err": message}.
 */

/** Container ports the runtime moves itself (the agent's attachRuntimePort, in the gateway). */
export interface RuntimePorts {
  /** Makes the port on the network's bridge; returns the name of its end in the host namespace. */
  attach(network: NetworkRecord, endpoint: EndpointRecord): Promise<string>;
  detach(network: NetworkRecord, endpointId: string): Promise<void>;
  /** The name of the interface with this MAC inside the container, once the runtime moved it there. */
  interfaceIn(sandbox: Sandbox, mac: string): Promise<string | undefined>;
  /**
   * The port is in the container (the endpoint now has its sandbox and interface): the resolver's
   * neighbour entry goes in at once, not a watch round later, as the container is starting.
   */
  inContainer?(network: NetworkRecord, endpoint: EndpointRecord): Promise<void>;
}

export interface DockerPluginOptions {
  store: Store;
  /** This host: it holds the addresses its Docker asked for until an endpoint takes them. */
  hostId: string;
  engine: DockerEngine;
  ports: RuntimePorts;
  log?: (level: 'info' | 'warn', event: string, fields?: Record<string, unknown>) => void;
  /** How long to wait for Docker to show a network it just created (it stores it after CreateNetwork). */
  engineWaitMs?: number;
  /** How long to wait, after Join, for Docker to show the container on the network and started. */
  joinWaitMs?: number;
  /**
   * veil's resolver (docs/dns.md): Join asks Docker for its route, so a query the container sends at
   * once waits for the neighbour entry the agent adds, rather than going out the default route.
   */
  resolverAddress?: string;
}

/** What a Docker network of this host is in veil: its veil network, or why it cannot be one. */
type Binding = { network: NetworkRecord } | { refused: string };

/** What CreateNetwork saw; compared with the veil network once Docker says the name. */
interface Requested {
  subnet: string;
  gateway: string;
  ipRange: string | undefined;
  internal: boolean;
  options: Record<string, string>;
}

/** PoolID: the subnet, and the ip-range after a comma (Docker keeps it and hands it back after restarts). */
export function poolId(subnet: string, ipRange?: string): string {
  return ipRange ? `${subnet},${ipRange}` : subnet;
}

function parsePoolId(id: string): { subnet: Cidr; subnetText: string; ipRange: string | undefined } {
  const [subnetText = '', ipRange, extra] = id.split(',');
  const subnet = parseCidr(subnetText);
  if (!subnet || extra !== undefined) throw new VeilError('VEIL_ERR_REQUEST_INVALID', `pool "${id}" is not veil's`);
  return { subnet, subnetText, ipRange: ipRange || undefined };
}

const AUX_REFUSAL =
  '--aux-address is not supported: veil reserves no auxiliary addresses (keep such addresses outside --ip-range instead)';

function invalid(detail: string): never {
  throw new VeilError('VEIL_ERR_REQUEST_INVALID', detail);
}

function mismatch(detail: string): never {
  throw new VeilError('VEIL_ERR_DOCKER_NETWORK_MISMATCH', detail);
}

/** The first disagreement between a Docker network's settings and the veil network's, in words. */
function disagreement(want: Requested, net: NetworkRecord): string | undefined {
  const encrypted = optionEnabled(want.options, 'encrypted');
  if (want.subnet !== net.ipam.subnet) return `subnet ${want.subnet}, veil has ${net.ipam.subnet}`;
  if (want.gateway !== net.ipam.gateway) return `gateway ${want.gateway}, veil has ${net.ipam.gateway}`;
  if ((want.ipRange ?? '') !== (net.ipam.ipRange ?? ''))
    return `ip-range ${want.ipRange ?? '(none)'}, veil has ${net.ipam.ipRange ?? '(none)'}`;
  if (encrypted !== net.encrypted)
    return encrypted ? 'encrypted, veil has it plain' : 'plain (no -o encrypted), veil has it encrypted';
  if (optionEnabled(want.options, 'strict') !== optionEnabled(net.options, 'strict'))
    return `strict ${optionEnabled(want.options, 'strict')}, veil has ${optionEnabled(net.options, 'strict')}`;
  if (want.internal !== net.internal) return `internal ${want.internal}, veil has ${net.internal}`;
  return undefined;
}

export class DockerPlugin {
  readonly #o: DockerPluginOptions;
  /** Docker network id → its veil network (or refusal), once known. */
  readonly #bindings = new Map<string, Promise<Binding>>();
  /** Docker network id → what CreateNetwork asked, until the binding is made. */
  readonly #requested = new Map<string, Requested>();
  /** Pools asked since the last CreateNetwork: the ip-range travels only in RequestPool. */
  readonly #pools = new Map<string, string | undefined>();
  /** Endpoints joined whose container veil has not learnt yet. */
  readonly #learning = new Set<string>();
  /** This host's reservations no endpoint had taken at the last sweep ("<network id> <ip> <revision>"). */
  #unclaimed = new Set<string>();

  constructor(options: DockerPluginOptions) {
    this.#o = options;
  }

  activate() {
    return { Implements: ['NetworkDriver', 'IpamDriver'] };
  }

  // ---- IpamDriver ---------------------------------------------------------------------------

  ipamCapabilities() {
    return { RequiresMACAddress: false, RequiresRequestReplay: false };
  }

  addressSpaces() {
    return { LocalDefaultAddressSpace: ADDRESS_SPACE, GlobalDefaultAddressSpace: ADDRESS_SPACE };
  }

  requestPool(req: RequestPoolRequest) {
    if (req.V6) invalid('veil networks are IPv4 only (leave out --ipv6)');
    if (!req.Pool) invalid('--subnet is required: veil has no default address pool');
    const subnet = parseCidr(req.Pool);
    if (!subnet || subnet.address !== subnet.first) invalid(`--subnet ${req.Pool} is not an IPv4 network (A.B.C.0/N)`);
    const refusal = overlaySubnetRefusal(subnet);
    if (refusal) invalid(`--subnet ${refusal}`);
    if (req.Options && Object.keys(req.Options).length > 0)
      invalid(`unknown --ipam-opt ${Object.keys(req.Options).join(', ')} (veil takes none)`);
    if (req.SubPool) {
      const range = parseCidr(req.SubPool);
      if (!range || range.address !== range.first || range.first < subnet.first || range.last > subnet.last)
        invalid(`--ip-range ${req.SubPool} is not a network inside ${req.Pool}`);
    }
    this.#pools.set(req.Pool, req.SubPool || undefined);
    return { PoolID: poolId(req.Pool, req.SubPool || undefined), Pool: req.Pool, Data: {} };
  }

  releasePool(req: { PoolID?: string }) {
    // A network whose create failed: its pool is no longer being created (see requestAddress).
    if (req.PoolID) this.#pools.delete(req.PoolID.split(',')[0]!);
    return {};
  }

  async requestAddress(req: RequestAddressRequest) {
    const pool = parsePoolId(req.PoolID);
    const prefix = `/${pool.subnet.prefixLength}`;
    const net = await this.#networkBySubnet(pool.subnetText);
    if (req.Options?.[REQUEST_ADDRESS_TYPE] === GATEWAY_ADDRESS) {
      // Asked before CreateNetwork: the network may not be in veil yet. Its gateway is the one asked for,
      // or the subnet's first address, as veil's own default.
      const gateway = req.Address || formatIpv4(pool.subnet.first + 1);
      const value = parseIpv4(gateway);
      if (value === undefined || value <= pool.subnet.first || value >= pool.subnet.last)
        invalid(`--gateway ${gateway} is not a usable address of ${pool.subnetText}`);
      return { Address: gateway + prefix, Data: {} };
    }
    if (!net && this.#pools.has(pool.subnetText)) invalid(AUX_REFUSAL); // an address asked while the network is being created is an --aux-address
    if (!net)
      invalid(
        `no veil network has subnet ${pool.subnetText} (its Docker network is not bound to one: see the gateway's log)`,
      );
    const ip = await this.#o.store.reserveAddress(net.id, this.#o.hostId, req.Address || undefined);
    return { Address: ip + prefix, Data: {} };
  }

  async releaseAddress(req: ReleaseAddressRequest) {
    const pool = parsePoolId(req.PoolID);
    const net = await this.#networkBySubnet(pool.subnetText);
    // The gateway is not allocated; an address an endpoint took was freed with the endpoint.
    if (net && req.Address !== net.ipam.gateway)
      await this.#o.store.releaseAddress(net.id, req.Address, this.#o.hostId);
    return {};
  }

  // ---- NetworkDriver ------------------------------------------------------------------------

  networkCapabilities() {
    // Local: Docker 20.10 without swarm has no global datastore; each host creates its own Docker network.
    return { Scope: 'local', ConnectivityScope: 'global' };
  }

  async createNetwork(req: CreateNetworkRequest) {
    const opts = req.Options ?? {};
    if (opts[IPV6_OPTION] === true) invalid('veil networks are IPv4 only (leave out --ipv6)');
    const generic = (opts[GENERIC_OPTIONS] ?? {}) as Record<string, unknown>;
    const options: Record<string, string> = {};
    for (const [k, v] of Object.entries(generic)) {
      if (!(NETWORK_OPTIONS as readonly string[]).includes(k))
        invalid(`unknown option -o ${k} (veil takes ${NETWORK_OPTIONS.map((o) => `-o ${o}`).join(', ')})`);
      options[k] = String(v);
    }
    if (optionEnabled(options, 'strict') && !optionEnabled(options, 'encrypted'))
      invalid('option "strict" applies to encrypted networks only (add -o encrypted)');
    const v4 = req.IPv4Data ?? [];
    if (v4.length !== 1 || v4[0]!.AddressSpace !== ADDRESS_SPACE)
      invalid('a veil network takes its addresses from veil: add --ipam-driver veil (and one --subnet)');
    const data = v4[0]!;
    if (Object.keys(data.AuxAddresses ?? {}).length > 0) invalid(AUX_REFUSAL);
    const gateway = data.Gateway?.split('/')[0];
    if (!gateway) invalid('Docker sent no gateway for the pool');
    const wanted: Requested = {
      subnet: data.Pool,
      gateway,
      ipRange: this.#pools.get(data.Pool),
      internal: opts[INTERNAL_OPTION] === true,
      options,
    };
    this.#pools.delete(data.Pool);
    // What can be checked without the name (Docker does not send it): a veil network on this subnet.
    const same = await this.#networkBySubnet(data.Pool);
    if (same) {
      const why = disagreement(wanted, same);
      if (why) mismatch(`veil network ${same.name} has subnet ${same.ipam.subnet}; this one asks ${why}`);
    }
    if (optionEnabled(options, 'encrypted')) {
      const windows = windowsHosts((await this.#o.store.listHosts()).items);
      if (windows.length > 0 && optionEnabled(options, 'strict'))
        throw new VeilError('VEIL_ERR_STRICT_UNENCRYPTED_HOST', `Windows host(s) ${windows.join(', ')} are registered`);
      if (windows.length > 0)
        this.#log('warn', 'encrypted network with Windows members', { warning: windowsNetworkWarning(windows) });
    }
    this.#requested.set(req.NetworkID, wanted);
    // Docker shows the network (and its name) only once this call has answered.
    void this.#binding(req.NetworkID).catch(() => undefined);
    return {};
  }

  async deleteNetwork(req: { NetworkID: string }) {
    // The veil network stays for the other hosts and for `veil network rm` (docs/docker.md "Networks").
    this.#bindings.delete(req.NetworkID);
    this.#requested.delete(req.NetworkID);
    return {};
  }

  async createEndpoint(req: CreateEndpointRequest) {
    const net = await this.#network(req.NetworkID);
    const address = req.Interface?.Address?.split('/')[0];
    if (!address) invalid('Docker sent no IPv4 address for the endpoint (is the IPAM driver veil?)');
    const mac = req.Interface?.MacAddress?.toLowerCase() || undefined;
    await this.#windowsRule(net);
    const existing = await this.#endpoint(net, req.EndpointID);
    const endpoint =
      existing ??
      (await this.#o.store.createEndpoint({
        id: req.EndpointID,
        networkId: net.id,
        // Docker says the container's name only after Join (docs/docker.md "Names").
        name: `docker-${req.EndpointID.slice(0, 12)}`,
        hostId: this.#o.hostId,
        ipv4: address,
        reservedBy: this.#o.hostId,
        ...(mac ? { mac } : {}),
      }));
    this.#log('info', 'docker endpoint created', {
      network: net.name,
      endpoint: endpoint.id,
      ipv4: endpoint.ipv4,
      mac: endpoint.mac,
    });
    // Docker refuses a driver that sets what it already has: the MAC only when Docker had none.
    return { Interface: mac ? {} : { MacAddress: endpoint.mac } };
  }

  /** A container of a Windows host on an encrypted network: refused when strict, else warned (docs/security.md). */
  async #windowsRule(net: NetworkRecord): Promise<void> {
    if (!net.encrypted) return;
    const self = (await this.#o.store.listHosts()).items.find((h) => h.id === this.#o.hostId);
    if (!self || !isWindows(self)) return;
    if (optionEnabled(net.options, 'strict'))
      throw new VeilError(
        'VEIL_ERR_STRICT_UNENCRYPTED_HOST',
        `this is Windows host ${self.id}; network ${net.name} is strict`,
      );
    this.#log('warn', 'docker endpoint not protected', { warning: windowsEndpointWarning(self.id, net.name) });
  }

  async endpointInfo(req: EndpointRequest) {
    const net = await this.#network(req.NetworkID);
    const ep = await this.#endpoint(net, req.EndpointID);
    return { Value: ep ? { network: net.name, vni: net.vni, ipv4: ep.ipv4, mac: ep.mac } : {} };
  }

  async deleteEndpoint(req: EndpointRequest) {
    const net = await this.#boundNetwork(req.NetworkID);
    if (!net) return {};
    await this.#o.ports.detach(net, req.EndpointID);
    if (await this.#endpoint(net, req.EndpointID)) {
      await this.#o.store.deleteEndpoint(net.id, req.EndpointID).catch((err: unknown) => {
        if (!(err instanceof VeilError && err.code === 'VEIL_ERR_NOT_FOUND')) throw err;
      });
      this.#log('info', 'docker endpoint deleted', { network: net.name, endpoint: req.EndpointID });
    }
    return {};
  }

  async join(req: JoinRequest): Promise<JoinResponse> {
    const net = await this.#network(req.NetworkID);
    const ep = await this.#endpoint(net, req.EndpointID);
    if (!ep) throw new VeilError('VEIL_ERR_ENDPOINT_NOT_FOUND', `${req.EndpointID} on ${net.name}`);
    const srcName = await this.#o.ports.attach(net, ep);
    // Docker says who joined only after this call: the name, aliases and namespace follow.
    this.#learning.add(ep.id);
    void this.#learn(req.NetworkID, net, ep, req.SandboxKey ?? '');
    // No gateway from veil: like Docker's overlay, the container's way out is Docker's gateway bridge,
    // which an internal network goes without.
    // One way to the resolver per container, through its first veil interface (docs/dns.md): a
    // container joining a second veil network has its route already.
    const sandboxKey = req.SandboxKey;
    const first =
      !sandboxKey ||
      !(await this.#o.store.listEndpoints()).items.some(
        (e) => e.id !== ep.id && e.sandbox !== undefined && 'netns' in e.sandbox && e.sandbox.netns === sandboxKey,
      );
    const resolver = first ? this.#o.resolverAddress : undefined;
    return {
      InterfaceName: { SrcName: srcName, DstPrefix: INTERFACE_PREFIX },
      ...(resolver ? { StaticRoutes: [{ Destination: `${resolver}/32`, RouteType: ROUTE_CONNECTED }] } : {}),
      DisableGatewayService: net.internal,
    };
  }

  async leave(req: EndpointRequest) {
    this.#learning.delete(req.EndpointID);
    const net = await this.#boundNetwork(req.NetworkID);
    if (net) await this.#o.ports.detach(net, req.EndpointID);
    return {};
  }

  /**
   * Frees this host's reservations that no endpoint took since the previous sweep (docs/docker.md
   * "Addresses"): Docker asks for an address and creates the endpoint within one call bound of each
   * other, so a reservation still unclaimed a whole sweep later belongs to a Docker that died between
   * the two. Returns the addresses freed.
   */
  async sweepReservations(): Promise<string[]> {
    const unclaimed = new Set<string>();
    const freed: string[] = [];
    for (const net of (await this.#o.store.listNetworks()).items) {
      for (const { ipv4, revision } of await this.#o.store.listReservations(net.id, this.#o.hostId)) {
        // The reservation, not the address: the same address reserved again since is a new one.
        const key = `${net.id} ${ipv4} ${revision}`;
        if (!this.#unclaimed.has(key)) {
          unclaimed.add(key);
          continue;
        }
        await this.#o.store.releaseAddress(net.id, ipv4, this.#o.hostId, revision);
        this.#log('info', 'docker reservation freed', { network: net.name, ipv4, reason: 'no endpoint took it' });
        freed.push(ipv4);
      }
    }
    this.#unclaimed = unclaimed;
    return freed;
  }

  /** Calls veil needs nothing for (swarm allocation, discovery, port publishing): answered empty. */
  nothing() {
    return {};
  }

  /** Whether the endpoint's container is known (or no longer looked for); the gateway does not wait for it. */
  learnt(endpointId: string): boolean {
    return !this.#learning.has(endpointId);
  }

  /**
   * After Join, in two steps (docs/docker.md "Names across hosts"). First, as soon as Docker has moved
   * the port into the container's namespace (its SandboxKey), that namespace and the interface name are
   * recorded: the agent then gives the container its neighbour entry for the resolver (Join already
   * gave it the route) and plumbs it again after a gateway restart. Then, once Docker lists the
   * container on the network, its name and aliases, which every host's resolver answers.
   */
  async #learn(dockerNetworkId: string, net: NetworkRecord, ep: EndpointRecord, sandboxKey: string): Promise<void> {
    const deadline = Date.now() + (this.#o.joinWaitMs ?? 30_000);
    const sandbox: Sandbox = { netns: sandboxKey };
    let placed = !sandboxKey;
    let named = false;
    let lastError: string | undefined;
    try {
      for (let wait = 10; this.#learning.has(ep.id); wait = Math.min(wait * 2, 100)) {
        // A failed look (Docker or etcd busy) is tried again until the deadline.
        try {
          if (!placed) {
            const ifName = await this.#o.ports.interfaceIn(sandbox, ep.mac);
            if (ifName) {
              const inside = await this.#o.store.updateEndpoint(net.id, ep.id, { sandbox, ifName });
              placed = true;
              await this.#o.ports.inContainer?.(net, inside);
            }
          }
          if (!named) {
            const known = await this.#containerOf(dockerNetworkId, ep);
            if (known) {
              await this.#o.store.updateEndpoint(net.id, ep.id, known);
              this.#log('info', 'docker endpoint named', { network: net.name, endpoint: ep.id, container: known.name });
              named = true;
            }
          }
        } catch (err) {
          lastError = (err as Error).message;
        }
        if (placed && named) return;
        if (Date.now() >= deadline) {
          this.#log(
            'warn',
            placed
              ? 'docker container not seen on its network'
              : "docker container's namespace not visible to the gateway",
            {
              network: net.name,
              endpoint: ep.id,
              sandbox: sandboxKey,
              ...(lastError ? { error: lastError } : {}),
              ...(placed
                ? {}
                : { hint: 'share Docker\'s netns directory with the gateway (docs/docker.md "Enabling the plugin")' }),
            },
          );
          return;
        }
        await new Promise((r) => setTimeout(r, wait));
      }
    } catch (err) {
      this.#log('warn', 'docker container not named', {
        network: net.name,
        endpoint: ep.id,
        error: (err as Error).message,
      });
    } finally {
      this.#learning.delete(ep.id);
    }
  }

  async #containerOf(
    dockerNetworkId: string,
    ep: EndpointRecord,
  ): Promise<{ name: string; aliases: string[] } | undefined> {
    const info = await this.#o.engine.network(dockerNetworkId);
    // Docker lists an endpoint under "ep-<endpoint id>" until its container is attached; only a
    // container id names the container.
    const id = Object.entries(info?.Containers ?? {}).find(
      ([key, c]) => c.EndpointID === ep.id && /^[0-9a-f]{64}$/.test(key),
    )?.[0];
    if (!info || !id) return undefined;
    const c = await this.#o.engine.container(id);
    if (!c) return undefined;
    const aliases = (c.NetworkSettings.Networks?.[info.Name]?.Aliases ?? []).filter((a) => a.length > 0);
    return { name: c.Name.replace(/^\//, ''), aliases };
  }

  // ---- bindings -----------------------------------------------------------------------------

  async #network(dockerNetworkId: string): Promise<NetworkRecord> {
    const b = await this.#binding(dockerNetworkId);
    if ('refused' in b) mismatch(b.refused);
    return b.network;
  }

  /** The bound veil network, or undefined (deletes of what veil never had are no-ops). */
  async #boundNetwork(dockerNetworkId: string): Promise<NetworkRecord | undefined> {
    const b = await this.#binding(dockerNetworkId).catch(() => undefined);
    return b && 'network' in b ? b.network : undefined;
  }

  #binding(dockerNetworkId: string): Promise<Binding> {
    let b = this.#bindings.get(dockerNetworkId);
    if (!b) {
      b = this.#bind(dockerNetworkId);
      this.#bindings.set(dockerNetworkId, b);
      // A failure to reach Docker or etcd is not remembered: the next call tries again.
      b.catch(() => this.#bindings.delete(dockerNetworkId));
    }
    return b;
  }

  /** Asks Docker for the network's name and settings, then finds or creates the veil network of that name. */
  async #bind(dockerNetworkId: string): Promise<Binding> {
    const info = await this.#engineNetwork(dockerNetworkId);
    const config = info.IPAM.Config?.[0];
    if (info.IPAM.Driver !== 'veil' || !config?.Subnet)
      return this.#refuse(info, 'its addresses are not from veil (create it with --ipam-driver veil --subnet S)');
    const requested = this.#requested.get(dockerNetworkId);
    const options = requested?.options ?? { ...(info.Options ?? {}) };
    const wanted: Requested = requested ?? {
      subnet: config.Subnet,
      gateway: config.Gateway ?? formatIpv4(parseCidr(config.Subnet)!.first + 1),
      ipRange: config.IPRange || undefined,
      internal: info.Internal,
      options,
    };
    let net = await this.#o.store.getNetwork(info.Name).catch((err: unknown) => {
      if (err instanceof VeilError && err.code === 'VEIL_ERR_NOT_FOUND') return undefined;
      throw err;
    });
    if (!net) {
      try {
        net = await this.#o.store.createNetwork({
          name: info.Name,
          encrypted: optionEnabled(options, 'encrypted'),
          attachable: info.Attachable,
          internal: wanted.internal,
          labels: info.Labels ?? {},
          options,
          ipam: {
            subnet: wanted.subnet,
            gateway: wanted.gateway,
            ...(wanted.ipRange ? { ipRange: wanted.ipRange } : {}),
          },
        });
        this.#log('info', 'network created from Docker', { network: net.name, vni: net.vni, encrypted: net.encrypted });
      } catch (err) {
        if (!(err instanceof VeilError)) throw err;
        if (err.code !== 'VEIL_ERR_NETWORK_NAME_TAKEN') return this.#refuse(info, err.message);
        net = await this.#o.store.getNetwork(info.Name); // another host made it first
      }
    }
    const why = disagreement(wanted, net);
    if (why) return this.#refuse(info, `veil network ${net.name} disagrees: this one asks ${why}`);
    this.#requested.delete(dockerNetworkId);
    this.#log('info', 'docker network bound', { network: net.name, docker: dockerNetworkId, vni: net.vni });
    return { network: net };
  }

  #refuse(info: EngineNetwork, why: string): Binding {
    const refused = `Docker network ${info.Name} cannot be veil's: ${why}; docker network rm ${info.Name} and create it again`;
    this.#log('warn', 'docker network refused', { network: info.Name, docker: info.Id, reason: why });
    return { refused };
  }

  async #engineNetwork(id: string): Promise<EngineNetwork> {
    const deadline = Date.now() + (this.#o.engineWaitMs ?? 5_000);
    for (let wait = 10; ; wait = Math.min(wait * 2, 200)) {
      const info = await this.#o.engine.network(id);
      if (info) return info;
      if (Date.now() >= deadline) throw new VeilError('VEIL_ERR_NOT_FOUND', `Docker has no network ${id}`);
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  /**
   * The veil network of this subnet (subnets never overlap in veil). When none is there yet, bindings
   * still being made are waited for first: `docker run` right after `docker network create` asks for an
   * address before the binding that creates the veil network has seen Docker store the network.
   */
  async #networkBySubnet(subnet: string): Promise<NetworkRecord | undefined> {
    const find = async () => (await this.#o.store.listNetworks()).items.find((n) => n.ipam.subnet === subnet);
    const found = await find();
    if (found || this.#requested.size === 0) return found;
    await Promise.allSettled([...this.#requested.keys()].map((id) => this.#binding(id)));
    return find();
  }

  async #endpoint(net: NetworkRecord, endpointId: string): Promise<EndpointRecord | undefined> {
    return (await this.#o.store.listEndpoints(net.id)).items.find((e) => e.id === endpointId);
  }

  #log(level: 'info' | 'warn', event: string, fields?: Record<string, unknown>): void {
    this.#o.log?.(level, event, fields);
  }
}
