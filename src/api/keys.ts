import type { FastifyInstance } from 'fastify';
import { VeilError } from '../errors.js';
import type { InstallerStatus } from '../keyrotation/installer.js';
import type { LeaderStatus } from '../keyrotation/leader.js';
import { nextRotationAt, type ScheduleConfig } from '../keyrotation/schedule.js';
import type { KeyEpochRecord, NetworkRecord, Store } from '../store/types.js';
import { isoTime as iso, LastRead, nullableString } from './last-read.js';
import { errorSchema } from './schemas.js';

/*
 * The key schedule of an encrypted network, as an operator needs it: epochs,
 * their states and timestamps, who holds a wrapped copy and who acked, what this
 * host has installed and seals with, the next rotation, and why it waits. Never a
 * key byte: the response schema is an allowlist without any field that could hold one.
 */

export interface KeyScheduleApi {
  requestRotation(
    networkIdOrName: string,
    by: string,
  ): Promise<{ networkId: string; afterEpoch: number; requestedAt: number }>;
  status(): { installer: InstallerStatus; leader: LeaderStatus; config: ScheduleConfig };
}

const epochSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    Epoch: { type: 'integer' },
    State: { type: 'string', enum: ['published', 'active', 'retired'] },
    PublishedAt: { type: 'string' },
    ActivatedAt: nullableString,
    RetiredAt: nullableString,
    /** Hosts holding a wrapped copy (ids only). */
    Members: { type: 'array', items: { type: 'string' } },
    Acked: { type: 'array', items: { type: 'string' } },
    InstalledHere: { type: 'boolean' },
    OutboundHere: { type: 'boolean' },
    Problem: nullableString,
  },
} as const;

const keysSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    Network: { type: 'string' },
    Id: { type: 'string' },
    Host: { type: 'string' },
    IntervalSeconds: { type: 'number' },
    NextRotation: nullableString,
    ScheduleLeader: { type: 'boolean' },
    Waiting: nullableString,
    StoreReachable: { type: 'boolean' },
    Epochs: { type: 'array', items: epochSchema },
  },
} as const;

const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 128 } },
} as const;

export function registerKeyRoutes(app: FastifyInstance, store: Store, keys: KeyScheduleApi): void {
  // While etcd is unreachable: the epochs as last read, with this host's own view fresh from the installer.
  const lastRead = new LastRead<{
    network: NetworkRecord;
    records: KeyEpochRecord[];
    members: string[][];
    acks: string[][];
  }>();
  app.get<{ Params: { id: string } }>(
    '/networks/:id/keys',
    {
      schema: {
        summary: 'Key epochs of an encrypted network: states, timestamps, acks, next rotation (never key bytes)',
        params: idParams,
        response: { 200: keysSchema, '4xx': errorSchema, '5xx': errorSchema },
      },
    },
    async (req) => {
      const { value: read, storeError } = await lastRead.get(req.params.id, async () => {
        const network = await store.getNetwork(req.params.id);
        if (!network.encrypted) throw new VeilError('VEIL_ERR_NOT_ENCRYPTED', `network ${network.name} has no keys`);
        const records = (await store.getEpochs(network.id)).items.sort((a, b) => a.epoch - b.epoch);
        const [copies, acks] = await Promise.all([
          store.listCopies(network.id),
          Promise.all(
            records.map(async (r) => (await store.listAcks(network.id, r.epoch)).items.map((a) => a.hostId).sort()),
          ),
        ]);
        const members = records.map((r) =>
          copies.items
            .filter((c) => c.epoch === r.epoch)
            .map((c) => c.hostId)
            .sort(),
        );
        return { network, records, members, acks };
      });
      const { network, records, members, acks } = read;
      const { installer, leader, config } = keys.status();
      const here = installer.networks.find((n) => n.networkId === network.id);
      const led = leader.leader ? leader.networks.find((n) => n.networkId === network.id) : undefined;
      const reachable = installer.store.reachable && storeError === null;
      const detail = installer.store.detail ?? storeError;
      const waiting = !reachable
        ? `etcd unreachable${detail ? ` (${detail})` : ''}: traffic keeps flowing on the current keys; rotation resumes when etcd returns${storeError ? ' (epochs as last read from etcd)' : ''}`
        : (led?.waiting?.reason ?? here?.waiting ?? null);
      return {
        Network: network.name,
        Id: network.id,
        Host: installer.hostId,
        IntervalSeconds: config.intervalMs / 1000,
        NextRotation: iso(nextRotationAt(records, config)),
        ScheduleLeader: leader.leader,
        Waiting: waiting,
        StoreReachable: reachable,
        Epochs: records.map((r, i) => {
          const mine = here?.epochs.find((e) => e.epoch === r.epoch);
          return {
            Epoch: r.epoch,
            State: r.state,
            PublishedAt: iso(r.publishedAt)!,
            ActivatedAt: iso(r.activatedAt),
            RetiredAt: iso(r.retiredAt),
            Members: members[i]!,
            Acked: acks[i]!,
            InstalledHere: mine?.installed ?? false,
            OutboundHere: mine?.outbound ?? false,
            Problem: mine?.problem ?? null,
          };
        }),
      };
    },
  );

  app.post<{ Params: { id: string } }>(
    '/networks/:id/rotate',
    {
      schema: {
        summary: 'Force a key rotation now (the schedule leader publishes a new epoch; make-before-break as usual)',
        params: idParams,
        response: {
          202: {
            type: 'object',
            additionalProperties: false,
            properties: { Id: { type: 'string' }, AfterEpoch: { type: 'integer' }, RequestedAt: { type: 'string' } },
          },
          '4xx': errorSchema,
          '5xx': errorSchema,
        },
      },
    },
    async (req, reply) => {
      const cn = (req.socket as { getPeerCertificate?: () => { subject?: { CN?: string } } }).getPeerCertificate?.()
        ?.subject?.CN;
      const r = await keys.requestRotation(req.params.id, cn ? `api:${cn}` : 'api');
      req.log.info({ network: r.networkId, afterEpoch: r.afterEpoch }, 'rotation requested');
      return reply.status(202).send({ Id: r.networkId, AfterEpoch: r.afterEpoch, RequestedAt: iso(r.requestedAt)! });
    },
  );
}
