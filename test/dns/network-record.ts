import type { NetworkRecord } from '../../src/store/types.js';

/** A plain network record as the store holds it; the gateway is the subnet's first address. */
export function networkRecord(name: string, subnet: string, vni: number): NetworkRecord {
  return {
    id: name.padEnd(64, '0'),
    name,
    driver: 'overlay',
    vni,
    index: vni,
    encrypted: false,
    attachable: true,
    internal: false,
    labels: {},
    ipam: { subnet, gateway: subnet.replace(/0\/\d+$/, '1') },
    options: {},
    created: '2026-01-01T00:00:00Z',
  };
}
