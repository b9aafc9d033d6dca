import type { FastifyInstance } from 'fastify';
import { nextRotationAt } from '../keyrotation/schedule.js';
import type { HostRecord, KeyEpochRecord, NetworkRecord, Store } from '../store/types.js';
import type { GatewayStatus } from '../vxlan/gateway.js';
import { isWindows, optionEnabled } from '../model/windows.js';
import type { KeyScheduleApi } from './keys.js';
import { isoTime as iso, LastRead, nullableString } from './last-read.js';
import { errorSchema } from './schemas.js';

/*
 * "Is my traffic encrypted?" (docker/docs#1078: Docker shows only `"encrypted": ""`).
 * Per network and per peer, from this host's point of view: protected or not and
 * why, the SAs in use (SPIs, epochs), packets sealed and opened, drops by reason,
 * sequence headroom, the last and next rotation. Never a key byte.
 */

const hexSpi = (spi: number) => `0x${spi.toString(16).padStart(8, '0')}`;
const counts = { type: 'object', additionalProperties: { type: 'number' } } as const;

const peerSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    Host: { type: 'string' },
    Address: { type: 'string' },
    OS: { type: 'string' },
    Protected: { type: 'boolean' },
    Statement: { type: 'string' },
    Outbound: {
      type: ['object', 'null'],
      additionalProperties: false,
      properties: {
        SPI: { type: 'string' },
        Epoch: { type: 'integer' },
        Sealed: { type: 'number' },
        SequenceHeadroom: { type: 'number' },
      },
    },
    Inbound: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        properties: { SPI: { type: 'string' }, Epoch: { type: 'integer' }, Opened: { type: 'number' } },
      },
    },
    TxPackets: { type: 'number' },
    TxBytes: { type: 'number' },
    RxPackets: { type: 'number' },
    RxBytes: { type: 'number' },
    Drops: counts,
  },
} as const;

const statusSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    Network: { type: 'string' },
    Id: { type: 'string' },
    VNI: { type: 'integer' },
    Encrypted: { type: 'boolean' },
    Strict: { type: 'boolean' },
    Host: { type: 'string' },
    Protected: { type: 'boolean' },
    Summary: { type: 'string' },
    LastRotation: nullableString,
    NextRotation: nullableString,
    Waiting: nullableString,
    Peers: { type: 'array', items: peerSchema },
    UnattributedDrops: counts,
  },
} as const;

export function registerNetworkStatusRoute(
  app: FastifyInstance,
  store: Store,
  gatewayStatus: () => GatewayStatus,
  keys?: KeyScheduleApi,
): void {
  const lastRead = new LastRead<{ network: NetworkRecord; hosts: HostRecord[]; epochs: KeyEpochRecord[] }>();
  app.get<{ Params: { id: string } }>(
    '/networks/:id/status',
    {
      schema: {
        summary:
          "Is this network's traffic encrypted? Per peer: protection, SPIs, epochs, packets sealed/opened, drops, sequence headroom, rotations",
        params: {
          type: 'object',
          required: ['id'],
          properties: { id: { type: 'string', minLength: 1, maxLength: 128 } },
        },
        response: { 200: statusSchema, '4xx': errorSchema, '5xx': errorSchema },
      },
    },
    async (req) => {
      // While etcd is unreachable, answer from the last read (the data plane's figures are always fresh):
      // "is my traffic encrypted?" must be answerable exactly when the control plane is down.
      const { value: read, storeError } = await lastRead.get(req.params.id, async () => {
        const network = await store.getNetwork(req.params.id);
        const [h, e] = await Promise.all([
          store.listHosts(),
          network.encrypted ? store.getEpochs(network.id) : Promise.resolve({ items: [], revision: 0 }),
        ]);
        return { network, hosts: h.items, epochs: e.items };
      });
      const storeDown = storeError !== null;
      const { network } = read;
      const hosts = { items: read.hosts };
      const epochs = { items: read.epochs };
      const gw = gatewayStatus();
      const ks = keys?.status();
      const active = epochs.items.filter((e) => e.state === 'active').sort((a, b) => b.epoch - a.epoch)[0];
      const peers = hosts.items
        .filter((h) => h.id !== gw.host)
        .sort((a, b) => a.index - b.index)
        .map((h) => {
          const pair = gw.pairs.find((p) => p.peer === h.id && p.vni === network.vni);
          const inbound = (pair?.inbound ?? []).map((i) => ({ SPI: hexSpi(i.spi), Epoch: i.epoch, Opened: i.opened }));
          const outbound = pair?.outbound
            ? {
                SPI: hexSpi(pair.outbound.spi),
                Epoch: pair.outbound.epoch,
                Sealed: pair.outbound.sealed,
                SequenceHeadroom: pair.outbound.sequenceHeadroom,
              }
            : null;
          const isProtected = network.encrypted && outbound !== null && inbound.length > 0;
          let statement: string;
          if (!network.encrypted) statement = 'plain network: VXLAN to and from this host is not encrypted';
          else if (isWindows(h))
            statement =
              'Windows host: it cannot encrypt overlay traffic, so its traffic on this network is not protected; veil fails closed toward it (dropped, never sent in plaintext)';
          else if (isProtected) statement = `encrypted: ESP AES-GCM, epoch ${outbound!.Epoch} outbound`;
          else statement = 'no usable SA yet: traffic to this host is dropped (fail closed), never sent in plaintext';
          return {
            Host: h.id,
            Address: h.address,
            OS: h.os,
            Protected: isProtected,
            Statement: statement,
            Outbound: outbound,
            Inbound: inbound,
            TxPackets: pair?.txPackets ?? 0,
            TxBytes: pair?.txBytes ?? 0,
            RxPackets: pair?.rxPackets ?? 0,
            RxBytes: pair?.rxBytes ?? 0,
            Drops: pair?.drops ?? {},
          };
        });
      const allProtected = network.encrypted && peers.every((p) => p.Protected);
      const unprotected = peers.filter((p) => !p.Protected).map((p) => p.Host);
      const summary = !network.encrypted
        ? 'plain network: traffic is not encrypted'
        : peers.length === 0
          ? 'encrypted network; no peers yet'
          : allProtected
            ? `encrypted: every peer (${peers.length}) has SAs in both directions`
            : `encrypted, but not toward ${unprotected.join(', ')}: that traffic is dropped, never sent in plaintext`;
      const installerNet = ks?.installer.networks.find((n) => n.networkId === network.id);
      return {
        Network: network.name,
        Id: network.id,
        VNI: network.vni,
        Encrypted: network.encrypted,
        Strict: optionEnabled(network.options, 'strict'),
        Host: gw.host,
        Protected: allProtected,
        Summary: summary,
        LastRotation: iso(active?.activatedAt),
        NextRotation: ks && network.encrypted ? iso(nextRotationAt(epochs.items, ks.config)) : null,
        Waiting:
          storeDown || (ks && !ks.installer.store.reachable)
            ? 'etcd unreachable: traffic keeps flowing on the current keys; rotation resumes when etcd returns'
            : (installerNet?.waiting ?? null),
        Peers: peers,
        UnattributedDrops: gw.unattributedDrops,
      };
    },
  );
}
