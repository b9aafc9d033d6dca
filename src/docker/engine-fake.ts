import type { DockerEngine } from './engine.js';
import type { EngineNetwork } from './protocol.js';

/** A DockerEngine that answers from a map the test fills, as Docker does once a network is stored. */
export class FakeEngine implements DockerEngine {
  readonly networks = new Map<string, EngineNetwork>();
  /** Lookups answered "not found" before the network shows (Docker stores it after CreateNetwork). */
  hiddenFor = 0;
  calls = 0;

  async network(id: string): Promise<EngineNetwork | undefined> {
    this.calls++;
    if (this.hiddenFor > 0) {
      this.hiddenFor--;
      return undefined;
    }
    return this.networks.get(id);
  }

  /** What Docker would store for `docker network create -d veil --ipam-driver veil ...`. */
  add(id: string, name: string, subnet: string, extra: Partial<EngineNetwork> = {}): EngineNetwork {
    const n: EngineNetwork = {
      Name: name,
      Id: id,
      Driver: 'veil',
      Internal: false,
      Attachable: false,
      EnableIPv6: false,
      Labels: {},
      Options: {},
      IPAM: { Driver: 'veil', Config: [{ Subnet: subnet }] },
      ...extra,
    };
    this.networks.set(id, n);
    return n;
  }
}
