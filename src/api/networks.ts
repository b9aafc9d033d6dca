import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { VeilError } from '../errors.js';
import type { EndpointRecord, HostRecord, NetworkRecord, Sandbox, Store } from '../store/types.js';
import {
  isWindows,
  optionEnabled,
  windowsEndpointWarning,
  windowsHostWarning,
  windowsHosts,
  windowsNetworkWarning,
} from '../model/windows.js';
import { errorSchema } from './schemas.js';

/*
 * Docker's network vocabulary (POST /networks, GET /networks[/{id}], DELETE /networks/{id},
 * POST /networks/{id}/connect|disconnect), with veil's additions: the VNI, the host of each
 * container, and a Warning when Windows hosts meet an encrypted network — Windows cannot encrypt
 * overlay traffic, so that host's traffic on the network is not protected (Docker stays silent
 * there). With the network option `strict` the request is refused instead.
 */

/** This gateway's host, as the routes need it: containers of this host are plumbed before the answer. */
export interface LocalHost {
  readonly hostId: string;
  /** Plugs the container in; throws VEIL_ERR_ATTACH_FAILED (the endpoint record is then removed). */
  attach(network: NetworkRecord, endpoint: EndpointRecord): Promise<void>;
  detach(endpoint: EndpointRecord): Promise<void>;
}

/** Docker's EndpointID: 64 hex digits. Derived from (network, container name), so a name connects once. */
export function endpointId(networkId: string, container: string): string {
  return createHash('sha256').update(`veil endpoint v1\0${networkId}\0${container}`).digest('hex');
}

/** A runtime's attachment (CNI: container id and interface, CNI SPEC "Parameters") is its own endpoint. */
export function runtimeEndpointId(networkId: string, containerId: string, ifName: string): string {
  return createHash('sha256').update(`veil cni endpoint v1\0${networkId}\0${containerId}\0${ifName}`).digest('hex');
}

const labels = {
  type: 'object',
  additionalProperties: { type: 'string', maxLength: 1024 },
  maxProperties: 64,
} as const;
const options = {
  type: 'object',
  additionalProperties: { type: 'string', maxLength: 1024 },
  maxProperties: 64,
} as const;
const ipv4Cidr = { type: 'string', pattern: '^\\d{1,3}(\\.\\d{1,3}){3}/\\d{1,2}$' } as const;
const ipv4 = { type: 'string', pattern: '^\\d{1,3}(\\.\\d{1,3}){3}$' } as const;

const createBody = {
  type: 'object',
  required: ['Name'],
  additionalProperties: false,
  properties: {
    Name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' },
    Driver: { type: 'string', enum: ['overlay'] },
    // Fields the Docker CLI sends: accepted where veil can honour them.
    CheckDuplicate: { type: 'boolean' },
    Scope: { type: 'string', enum: ['swarm', 'global', 'local'] },
    EnableIPv6: { type: 'boolean', const: false },
    Ingress: { type: 'boolean', const: false },
    ConfigOnly: { type: 'boolean', const: false },
    Attachable: { type: 'boolean' },
    Internal: { type: 'boolean' },
    Labels: labels,
    Options: options,
    IPAM: {
      type: 'object',
      additionalProperties: false,
      required: ['Config'],
      properties: {
        Driver: { type: 'string', enum: ['default'] },
        Options: { type: 'object', maxProperties: 0 },
        Config: {
          type: 'array',
          minItems: 1,
          maxItems: 1,
          items: {
            type: 'object',
            required: ['Subnet'],
            additionalProperties: false,
            properties: { Subnet: ipv4Cidr, Gateway: ipv4, IPRange: ipv4Cidr },
          },
        },
      },
    },
  },
} as const;

const containerSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    Name: { type: 'string' },
    EndpointID: { type: 'string' },
    MacAddress: { type: 'string' },
    IPv4Address: { type: 'string' },
    IPv6Address: { type: 'string' },
    Host: { type: 'string' },
    Aliases: { type: 'array', items: { type: 'string' } },
    /** veil: set when a runtime plugin (CNI) made it: the runtime's container id and the interface. */
    Runtime: {
      type: 'object',
      additionalProperties: false,
      properties: { Kind: { type: 'string' }, ContainerID: { type: 'string' }, IfName: { type: 'string' } },
    },
  },
} as const;

const networkSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    Name: { type: 'string' },
    Id: { type: 'string' },
    Created: { type: 'string' },
    Scope: { type: 'string' },
    Driver: { type: 'string' },
    EnableIPv6: { type: 'boolean' },
    IPAM: {
      type: 'object',
      properties: {
        Driver: { type: 'string' },
        Config: {
          type: 'array',
          items: {
            type: 'object',
            properties: { Subnet: { type: 'string' }, Gateway: { type: 'string' }, IPRange: { type: 'string' } },
          },
        },
      },
    },
    Internal: { type: 'boolean' },
    Attachable: { type: 'boolean' },
    Encrypted: { type: 'boolean' },
    VNI: { type: 'integer' },
    Options: options,
    Labels: labels,
    Containers: { type: 'object', additionalProperties: containerSchema },
  },
} as const;

const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 128 } },
} as const;
const containerName = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$' } as const;
const ifName = { type: 'string', pattern: '^[a-z][a-z0-9]{0,14}$' } as const;
/** A CNI runtime's container (CNI_CONTAINERID): DEL and CHECK find the endpoint by it. */
const runtimeRef = {
  type: 'object',
  required: ['Kind', 'ContainerID'],
  additionalProperties: false,
  properties: {
    Kind: { type: 'string', enum: ['cni'] },
    ContainerID: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$' },
  },
} as const;
const dnsName = { type: 'string', pattern: '^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$' } as const;

const connectBody = {
  type: 'object',
  required: ['Container'],
  additionalProperties: false,
  properties: {
    Container: containerName,
    /** veil: the host the container runs on (default: this gateway's host). */
    Host: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' },
    /** veil: where the container's network namespace is on its host (Docker's SandboxKey). */
    Sandbox: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      maxProperties: 1,
      // Pid 1 is the host's init: never a container (the agent also refuses the gateway's own namespace).
      properties: { Netns: { type: 'string', pattern: '^/', maxLength: 4096 }, Pid: { type: 'integer', minimum: 2 } },
    },
    /** veil: the interface name inside the container (default: the next free ethN). */
    IfName: ifName,
    /** veil: the runtime's own id for the container (CNI); the endpoint is then that container's interface. */
    Runtime: runtimeRef,
    EndpointConfig: {
      type: 'object',
      additionalProperties: false,
      properties: {
        IPAMConfig: { type: 'object', additionalProperties: false, properties: { IPv4Address: ipv4 } },
        Aliases: { type: 'array', items: dnsName, maxItems: 64, uniqueItems: true },
        MacAddress: { type: 'string', pattern: '^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$' },
      },
    },
  },
} as const;

const connectResponse = {
  type: 'object',
  additionalProperties: false,
  required: ['EndpointID', 'Name', 'Host', 'IPv4Address', 'MacAddress', 'Aliases', 'Warning'],
  properties: { ...containerSchema.properties, Warning: { type: 'string' } },
} as const;

/** Container (as connected), or Runtime and IfName (as a CNI DEL knows it). */
const disconnectBody = {
  type: 'object',
  additionalProperties: false,
  properties: { Container: containerName, Runtime: runtimeRef, IfName: ifName, Force: { type: 'boolean' } },
} as const;

export const hostSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    Id: { type: 'string' },
    Index: { type: 'integer' },
    Address: { type: 'string' },
    OS: { type: 'string' },
    Arch: { type: 'string' },
    Version: { type: 'string' },
    Incarnation: { type: 'string' },
    PublicKey: { type: 'string' },
    Warning: { type: 'string' },
  },
} as const;

type CreateBody = {
  Name: string;
  Driver?: 'overlay';
  Attachable?: boolean;
  Internal?: boolean;
  Labels?: Record<string, string>;
  Options?: Record<string, string>;
  IPAM?: { Config: Array<{ Subnet: string; Gateway?: string; IPRange?: string }> };
};

type RuntimeBody = { Kind: 'cni'; ContainerID: string };
type ConnectBody = {
  Container: string;
  Host?: string;
  Sandbox?: { Netns?: string; Pid?: number };
  IfName?: string;
  Runtime?: RuntimeBody;
  EndpointConfig?: { IPAMConfig?: { IPv4Address?: string }; Aliases?: string[]; MacAddress?: string };
};

export function containerView(n: NetworkRecord, e: EndpointRecord) {
  const prefix = n.ipam.subnet.split('/')[1];
  return {
    Name: e.name,
    EndpointID: e.id,
    MacAddress: e.mac,
    IPv4Address: `${e.ipv4}/${prefix}`,
    IPv6Address: '',
    Host: e.hostId,
    Aliases: e.aliases,
    ...(e.runtime
      ? { Runtime: { Kind: e.runtime.kind, ContainerID: e.runtime.containerId, IfName: e.ifName ?? 'eth0' } }
      : {}),
  };
}

export function networkView(n: NetworkRecord, endpoints?: EndpointRecord[]) {
  return {
    Name: n.name,
    Id: n.id,
    Created: n.created,
    Scope: 'global',
    Driver: n.driver,
    EnableIPv6: false,
    IPAM: {
      Driver: 'default',
      Config: [
        { Subnet: n.ipam.subnet, Gateway: n.ipam.gateway, ...(n.ipam.ipRange ? { IPRange: n.ipam.ipRange } : {}) },
      ],
    },
    Internal: n.internal,
    Attachable: n.attachable,
    Encrypted: n.encrypted,
    VNI: n.vni,
    Options: n.options,
    Labels: n.labels,
    ...(endpoints ? { Containers: Object.fromEntries(endpoints.map((e) => [e.id, containerView(n, e)])) } : {}),
  };
}

export function hostView(h: HostRecord, encryptedNetworks: string[]) {
  return {
    Id: h.id,
    Index: h.index,
    Address: h.address,
    OS: h.os,
    Arch: h.arch,
    Version: h.version,
    Incarnation: h.incarnation,
    PublicKey: h.publicKey,
    ...(isWindows(h) && encryptedNetworks.length > 0 ? { Warning: windowsHostWarning([h.id], encryptedNetworks) } : {}),
  };
}

/** The endpoints whose interfaces are in this container (its host and sandbox), on any network. */
async function sandboxEndpoints(store: Store, hostId: string, sandbox: Sandbox): Promise<EndpointRecord[]> {
  const key = JSON.stringify(sandbox);
  return (await store.listEndpoints()).items.filter(
    (e) => e.hostId === hostId && e.sandbox !== undefined && JSON.stringify(e.sandbox) === key,
  );
}

/** The endpoint whose interface in this container has that name, if any. */
async function interfaceHolder(
  store: Store,
  hostId: string,
  sandbox: Sandbox,
  ifName: string,
): Promise<EndpointRecord | undefined> {
  return (await sandboxEndpoints(store, hostId, sandbox)).find((e) => (e.ifName ?? 'eth0') === ifName);
}

/** eth0, eth1, ...: the lowest name no other network's endpoint of the same container uses. */
async function nextInterfaceName(store: Store, hostId: string, sandbox: Sandbox): Promise<string> {
  const used = new Set((await sandboxEndpoints(store, hostId, sandbox)).map((e) => e.ifName ?? 'eth0'));
  let n = 0;
  while (used.has(`eth${n}`)) n++;
  return `eth${n}`;
}

const reply4xx5xx = { '4xx': errorSchema, '5xx': errorSchema } as const;

export function registerNetworkRoutes(app: FastifyInstance, store: Store, local?: LocalHost): void {
  const turns = new Map<string, Promise<unknown>>();
  /** Runs `work` after every earlier call with the same key has settled; without a key at once. */
  const inTurn = <T>(key: string | undefined, work: () => Promise<T>): Promise<T> => {
    if (key === undefined) return work();
    const turn = (turns.get(key) ?? Promise.resolve()).then(work, work);
    const settled = turn.then(
      () => undefined,
      () => undefined,
    );
    turns.set(key, settled);
    void settled.then(() => {
      if (turns.get(key) === settled) turns.delete(key);
    });
    return turn;
  };
  app.post<{ Body: CreateBody }>(
    '/networks',
    {
      schema: {
        summary: 'Create an overlay network (docker network create)',
        body: createBody,
        response: {
          201: {
            type: 'object',
            additionalProperties: false,
            required: ['Id', 'Warning'],
            properties: { Id: { type: 'string' }, Warning: { type: 'string' } },
          },
          ...reply4xx5xx,
        },
      },
    },
    async (req, reply) => {
      const body = req.body;
      const config = body.IPAM?.Config[0];
      if (!config)
        throw new VeilError(
          'VEIL_ERR_REQUEST_INVALID',
          'IPAM.Config[0].Subnet is required (veil has no default address pool)',
        );
      const encrypted = optionEnabled(body.Options, 'encrypted');
      const strict = optionEnabled(body.Options, 'strict');
      if (strict && !encrypted)
        throw new VeilError(
          'VEIL_ERR_REQUEST_INVALID',
          'option "strict" applies to encrypted networks only (add --opt encrypted)',
        );
      let warning = '';
      if (encrypted) {
        const windows = windowsHosts((await store.listHosts()).items);
        if (windows.length > 0) {
          if (strict)
            throw new VeilError(
              'VEIL_ERR_STRICT_UNENCRYPTED_HOST',
              `Windows host(s) ${windows.join(', ')} are registered`,
            );
          warning = windowsNetworkWarning(windows);
        }
      }
      const network = await store.createNetwork({
        name: body.Name,
        encrypted,
        attachable: body.Attachable ?? false,
        internal: body.Internal ?? false,
        labels: body.Labels ?? {},
        options: body.Options ?? {},
        ipam: {
          subnet: config.Subnet,
          ...(config.Gateway ? { gateway: config.Gateway } : {}),
          ...(config.IPRange ? { ipRange: config.IPRange } : {}),
        },
      });
      req.log.info({ network: network.name, id: network.id, vni: network.vni, encrypted }, 'network created');
      if (warning) req.log.warn({ network: network.name, warning }, 'encrypted network with Windows members');
      return reply.status(201).send({ Id: network.id, Warning: warning });
    },
  );

  app.get(
    '/networks',
    {
      schema: {
        summary: 'List networks (docker network ls)',
        response: { 200: { type: 'array', items: networkSchema }, '5xx': errorSchema },
      },
    },
    async () => (await store.listNetworks()).items.map((n) => networkView(n)),
  );

  app.get<{ Params: { id: string } }>(
    '/networks/:id',
    {
      schema: {
        summary: 'Inspect a network and its containers (docker network inspect)',
        params: idParams,
        response: { 200: networkSchema, ...reply4xx5xx },
      },
    },
    async (req) => {
      const network = await store.getNetwork(req.params.id);
      return networkView(network, (await store.listEndpoints(network.id)).items);
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/networks/:id',
    {
      schema: {
        summary: 'Remove a network (refused while containers are connected)',
        params: idParams,
        response: { 204: { type: 'null' }, ...reply4xx5xx },
      },
    },
    async (req, reply) => {
      const network = await store.getNetwork(req.params.id);
      await store.deleteNetwork(network.id);
      req.log.info({ network: network.name, id: network.id }, 'network removed');
      return reply.status(204).send();
    },
  );

  app.post<{ Params: { id: string }; Body: ConnectBody }>(
    '/networks/:id/connect',
    {
      schema: {
        summary:
          'Connect a container to a network (docker network connect): allocates its IP and MAC, plumbs it on its host',
        params: idParams,
        body: connectBody,
        response: { 200: connectResponse, ...reply4xx5xx },
      },
    },
    async (req) => {
      const body = req.body;
      const network = await store.getNetwork(req.params.id);
      const hostId = body.Host ?? local?.hostId;
      if (hostId === undefined)
        throw new VeilError('VEIL_ERR_REQUEST_INVALID', 'Host is required (this API runs without a gateway)');
      const isLocal = local !== undefined && hostId === local.hostId;
      const sandbox: Sandbox | undefined =
        body.Sandbox?.Netns !== undefined
          ? { netns: body.Sandbox.Netns }
          : body.Sandbox?.Pid !== undefined
            ? { pid: body.Sandbox.Pid }
            : undefined;
      if (isLocal && !sandbox)
        throw new VeilError(
          'VEIL_ERR_REQUEST_INVALID',
          'Sandbox (Netns path or Pid) is required for a container on this host',
        );
      const host = (await store.listHosts()).items.find((h) => h.id === hostId);
      if (!host) throw new VeilError('VEIL_ERR_HOST_NOT_FOUND', `${hostId} is not a registered (live) host`);
      let warning = '';
      if (network.encrypted && isWindows(host)) {
        if (optionEnabled(network.options, 'strict'))
          throw new VeilError(
            'VEIL_ERR_STRICT_UNENCRYPTED_HOST',
            `${body.Container} is on Windows host ${hostId}; network ${network.name} is strict`,
          );
        warning = windowsEndpointWarning(hostId, network.name);
      }
      if ((body.IfName !== undefined || body.Runtime !== undefined) && !sandbox)
        throw new VeilError('VEIL_ERR_REQUEST_INVALID', 'IfName and Runtime need the Sandbox the interface goes into');
      // Connects into one container take turns: each picks its interface name (eth0, eth1, ...) once the
      // one before has its endpoint, so two at once never take the same name.
      const endpoint = await inTurn(sandbox && JSON.stringify([hostId, sandbox]), async () => {
        if (body.IfName !== undefined && sandbox) {
          const holder = await interfaceHolder(store, hostId, sandbox, body.IfName);
          if (holder)
            throw new VeilError(
              'VEIL_ERR_ENDPOINT_EXISTS',
              `interface ${body.IfName} of that container is already ${holder.name}'s${holder.networkId === network.id ? '' : ' on another network'}`,
            );
        }
        const cfg = body.EndpointConfig;
        const ifName = sandbox ? (body.IfName ?? (await nextInterfaceName(store, hostId, sandbox))) : undefined;
        const created = await store.createEndpoint({
          id: body.Runtime
            ? runtimeEndpointId(network.id, body.Runtime.ContainerID, ifName!)
            : endpointId(network.id, body.Container),
          ...(body.Runtime ? { runtime: { kind: body.Runtime.Kind, containerId: body.Runtime.ContainerID } } : {}),
          networkId: network.id,
          name: body.Container,
          hostId,
          aliases: cfg?.Aliases ?? [],
          ...(cfg?.IPAMConfig?.IPv4Address ? { ipv4: cfg.IPAMConfig.IPv4Address } : {}),
          ...(cfg?.MacAddress ? { mac: cfg.MacAddress.toLowerCase() } : {}),
          ...(sandbox ? { sandbox } : {}),
          ...(ifName ? { ifName } : {}),
        });
        if (isLocal) {
          try {
            await local.attach(network, created);
          } catch (err) {
            // No partial state: the IP and the record go again.
            await store
              .deleteEndpoint(network.id, created.id)
              .catch((e: Error) => req.log.error({ error: e.message }, 'could not roll back an endpoint'));
            // A refusal keeps its code; anything the host could not do is "could not attach" (422).
            throw err instanceof VeilError && err.status < 500
              ? err
              : new VeilError('VEIL_ERR_ATTACH_FAILED', (err as Error).message, { cause: err });
          }
        }
        return created;
      });
      req.log.info(
        { network: network.name, container: endpoint.name, host: hostId, ipv4: endpoint.ipv4, mac: endpoint.mac },
        'container connected',
      );
      if (warning)
        req.log.warn(
          { network: network.name, container: endpoint.name, host: hostId, warning },
          'Windows container on an encrypted network',
        );
      return { ...containerView(network, endpoint), Warning: warning };
    },
  );

  app.post<{
    Params: { id: string };
    Body: { Container?: string; Runtime?: RuntimeBody; IfName?: string; Force?: boolean };
  }>(
    '/networks/:id/disconnect',
    {
      schema: {
        summary: 'Disconnect a container (docker network disconnect): frees its IP',
        params: idParams,
        body: disconnectBody,
        response: { 204: { type: 'null' }, ...reply4xx5xx },
      },
    },
    async (req, reply) => {
      const { Container, Runtime, IfName } = req.body;
      if ((Container === undefined) === (Runtime === undefined) || (Runtime !== undefined && IfName === undefined))
        throw new VeilError('VEIL_ERR_REQUEST_INVALID', 'give Container, or Runtime and IfName');
      const network = await store.getNetwork(req.params.id);
      const id = Runtime
        ? runtimeEndpointId(network.id, Runtime.ContainerID, IfName!)
        : endpointId(network.id, Container!);
      const endpoint = (await store.listEndpoints(network.id)).items.find((e) => e.id === id);
      const who = Runtime ? `${Runtime.ContainerID} (${IfName})` : Container;
      if (!endpoint) throw new VeilError('VEIL_ERR_ENDPOINT_NOT_FOUND', `${who} is not connected to ${network.name}`);
      await store.deleteEndpoint(network.id, endpoint.id);
      if (local && endpoint.hostId === local.hostId) {
        await local.detach(endpoint).catch((err: Error) => {
          // The record is gone and the IP free; a leftover veth is logged, not fatal (Force or not).
          req.log.warn({ container: endpoint.name, error: err.message }, 'detach failed');
        });
      }
      req.log.info(
        { network: network.name, container: endpoint.name, host: endpoint.hostId },
        'container disconnected',
      );
      return reply.status(204).send();
    },
  );

  app.get(
    '/hosts',
    {
      schema: {
        summary: 'List live hosts (veil host ls)',
        response: { 200: { type: 'array', items: hostSchema }, '5xx': errorSchema },
      },
    },
    async () => {
      const [hosts, networks] = await Promise.all([store.listHosts(), store.listNetworks()]);
      const encrypted = networks.items.filter((n) => n.encrypted).map((n) => n.name);
      return hosts.items.map((h) => hostView(h, encrypted));
    },
  );
}
