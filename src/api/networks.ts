import type { FastifyInstance } from 'fastify';
import { VeilError } from '../errors.js';
import type { HostRecord, NetworkRecord, Store } from '../store/types.js';
import { errorSchema } from './schemas.js';

/*
 * Docker's network vocabulary (POST /networks, GET /networks[/{id}], DELETE /networks/{id}), with
 * veil's additions: the VNI, and a Warning when Windows hosts meet an encrypted network — Windows
 * cannot encrypt overlay traffic, so that host's traffic on the network is not protected (Docker
 * stays silent there). With the `strict` option the request is refused instead.
 */

export const WINDOWS_WARNING =
  'Windows hosts cannot encrypt overlay traffic: traffic of the Windows host(s) %s on this encrypted network will not be protected';

/** Docker's `--opt encrypted` arrives as {"encrypted": ""}; any value but "false" turns it on. */
export function optionEnabled(options: Record<string, string> | undefined, name: string): boolean {
  return options !== undefined && name in options && options[name] !== 'false';
}

export function windowsHosts(hosts: HostRecord[]): string[] {
  return hosts.filter((h) => h.os.toLowerCase() === 'windows').map((h) => h.id).sort();
}

const labels = { type: 'object', additionalProperties: { type: 'string', maxLength: 1024 }, maxProperties: 64 } as const;
const options = { type: 'object', additionalProperties: { type: 'string', maxLength: 1024 }, maxProperties: 64 } as const;
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
          items: { type: 'object', properties: { Subnet: { type: 'string' }, Gateway: { type: 'string' }, IPRange: { type: 'string' } } },
        },
      },
    },
    Internal: { type: 'boolean' },
    Attachable: { type: 'boolean' },
    Encrypted: { type: 'boolean' },
    VNI: { type: 'integer' },
    Options: options,
    Labels: labels,
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

export function networkView(n: NetworkRecord) {
  return {
    Name: n.name,
    Id: n.id,
    Created: n.created,
    Scope: 'global',
    Driver: n.driver,
    EnableIPv6: false,
    IPAM: { Driver: 'default', Config: [{ Subnet: n.ipam.subnet, Gateway: n.ipam.gateway, ...(n.ipam.ipRange ? { IPRange: n.ipam.ipRange } : {}) }] },
    Internal: n.internal,
    Attachable: n.attachable,
    Encrypted: n.encrypted,
    VNI: n.vni,
    Options: n.options,
    Labels: n.labels,
  };
}

export function registerNetworkRoutes(app: FastifyInstance, store: Store): void {
  app.post<{ Body: CreateBody }>('/networks', {
    schema: {
      body: createBody,
      response: {
        201: { type: 'object', additionalProperties: false, required: ['Id', 'Warning'], properties: { Id: { type: 'string' }, Warning: { type: 'string' } } },
        '4xx': errorSchema,
        '5xx': errorSchema,
      },
    },
  }, async (req, reply) => {
    const body = req.body;
    const config = body.IPAM?.Config[0];
    if (!config) throw new VeilError('VEIL_ERR_REQUEST_INVALID', 'IPAM.Config[0].Subnet is required (veil has no default address pool)');
    const encrypted = optionEnabled(body.Options, 'encrypted');
    const strict = optionEnabled(body.Options, 'strict');
    let warning = '';
    if (encrypted) {
      const windows = windowsHosts((await store.listHosts()).items);
      if (windows.length > 0) {
        if (strict) throw new VeilError('VEIL_ERR_STRICT_UNENCRYPTED_HOST', `Windows host(s) ${windows.join(', ')} are registered`);
        warning = WINDOWS_WARNING.replace('%s', windows.join(', '));
      }
    }
    const network = await store.createNetwork({
      name: body.Name,
      encrypted,
      attachable: body.Attachable ?? false,
      internal: body.Internal ?? false,
      labels: body.Labels ?? {},
      options: body.Options ?? {},
      ipam: { subnet: config.Subnet, ...(config.Gateway ? { gateway: config.Gateway } : {}), ...(config.IPRange ? { ipRange: config.IPRange } : {}) },
    });
    if (warning) req.log.warn({ network: network.name, warning }, 'encrypted network with Windows members');
    return reply.status(201).send({ Id: network.id, Warning: warning });
  });

  app.get('/networks', { schema: { response: { 200: { type: 'array', items: networkSchema }, '5xx': errorSchema } } }, async () =>
    (await store.listNetworks()).items.map(networkView));

  app.get<{ Params: { id: string } }>('/networks/:id', {
    schema: { params: { type: 'object', properties: { id: { type: 'string', maxLength: 128 } } }, response: { 200: networkSchema, '4xx': errorSchema, '5xx': errorSchema } },
  }, async (req) => networkView(await store.getNetwork(req.params.id)));

  app.delete<{ Params: { id: string } }>('/networks/:id', {
    schema: { params: { type: 'object', properties: { id: { type: 'string', maxLength: 128 } } }, response: { 204: { type: 'null' }, '4xx': errorSchema, '5xx': errorSchema } },
  }, async (req, reply) => {
    await store.deleteNetwork(req.params.id);
    return reply.status(204).send();
  });
}
