// JSON schemas of the API's responses: allowlists, so nothing unlisted (least of all key material) leaves.

export const errorSchema = {
  type: 'object',
  required: ['code', 'message'],
  additionalProperties: false,
  properties: { code: { type: 'string' }, message: { type: 'string' } },
} as const;

const dropsSchema = { type: 'object', additionalProperties: { type: 'number' } } as const;

/** Packets and bytes each way, as a pair's and a plain network's device's counters have them. */
const trafficProperties = {
  txPackets: { type: 'number' },
  txBytes: { type: 'number' },
  rxPackets: { type: 'number' },
  rxBytes: { type: 'number' },
} as const;

const nftCounterSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { packets: { type: 'number' }, bytes: { type: 'number' } },
} as const;

export const gatewayStatusSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['host', 'peers', 'networks', 'pairs', 'unattributedDrops', 'sendFailures'],
  properties: {
    host: { type: 'string' },
    underlay: {
      type: 'object',
      additionalProperties: false,
      properties: { address: { type: 'string' }, mtu: { type: 'integer' }, mtuFrom: { type: 'string' } },
    },
    /** nftables in the vtep namespace: plain VXLAN that did not come from the gateway, dropped (no local injection). */
    vtepFirewall: {
      type: 'object',
      additionalProperties: false,
      properties: {
        packets: { type: 'number' },
        bytes: { type: 'number' },
        readAt: { type: 'string' },
        error: { type: 'string' },
      },
    },
    /** nftables in the vtep namespace: frames from container ports with a source not their own, or not IPv4/ARP. */
    portSecurity: {
      type: 'object',
      additionalProperties: false,
      properties: {
        spoofed: nftCounterSchema,
        notIpv4: nftCounterSchema,
        readAt: { type: 'string' },
        error: { type: 'string' },
      },
    },
    /**
     * Plain networks in the kernel: the host namespace's underlay firewall (plain VXLAN from no peer, and
     * an encrypted network's VNI in the clear, both dropped) and each network's VXLAN device counters.
     */
    plainNetworks: {
      type: 'object',
      additionalProperties: false,
      properties: {
        notAPeer: nftCounterSchema,
        plaintextOnEncrypted: nftCounterSchema,
        networks: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            properties: {
              vni: { type: 'integer' },
              ...trafficProperties,
              rxDropped: { type: 'number' },
              txDropped: { type: 'number' },
            },
          },
        },
        readAt: { type: 'string' },
        error: { type: 'string' },
      },
    },
    pathMtuError: { type: 'string' },
    peers: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        properties: {
          id: { type: 'string' },
          address: { type: 'string' },
          gateway: { type: 'string' },
          pathMtu: { type: 'integer' },
        },
      },
    },
    networks: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        properties: {
          id: { type: 'string' },
          index: { type: 'integer' },
          vni: { type: 'integer' },
          encrypted: { type: 'boolean' },
          /** Where an encrypted network's frames meet the data path (docs/plumbing.md "The TAP port"). */
          vtep: {
            type: 'object',
            additionalProperties: false,
            properties: {
              kind: { type: 'string' },
              offloads: { type: 'boolean' },
              macs: { type: 'integer' },
              reason: { type: 'string' },
            },
          },
        },
      },
    },
    pairs: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        properties: {
          peer: { type: 'string' },
          vni: { type: 'integer' },
          encrypted: { type: 'boolean' },
          ...trafficProperties,
          drops: dropsSchema,
          outbound: {
            type: 'object',
            additionalProperties: false,
            properties: {
              spi: { type: 'integer' },
              epoch: { type: 'integer' },
              sealed: { type: 'number' },
              sequenceHeadroom: { type: 'number' },
            },
          },
          inbound: {
            type: 'array',
            items: {
              type: 'object',
              additionalProperties: false,
              properties: { spi: { type: 'integer' }, epoch: { type: 'integer' }, opened: { type: 'number' } },
            },
          },
        },
      },
    },
    unattributedDrops: dropsSchema,
    sendFailures: { type: 'number' },
    /** Entries in the data path's tables (docs/operations.md "Footprint"). */
    tables: {
      type: 'object',
      additionalProperties: false,
      properties: {
        pairs: { type: 'integer' },
        inboundSas: { type: 'integer' },
        outboundSas: { type: 'integer' },
        retiredSas: { type: 'integer' },
      },
    },
    /** The gateway process: memory, descriptors, and what keeps its event loop alive, by kind. */
    process: {
      type: 'object',
      additionalProperties: false,
      properties: {
        rssBytes: { type: 'integer' },
        heapUsedBytes: { type: 'integer' },
        externalBytes: { type: 'integer' },
        openFds: { type: 'integer' },
        activeResources: { type: 'object', additionalProperties: { type: 'integer' } },
      },
    },
    /** What the etcd client keeps open (cluster mode). */
    store: {
      type: 'object',
      additionalProperties: false,
      properties: {
        watches: { type: 'integer' },
        etcdWatches: { type: 'integer' },
        leases: { type: 'integer' },
        campaigns: { type: 'integer' },
      },
    },
  },
} as const;
