import type { DockerEngine } from './engine.js';
import type { EngineContainer, EngineNetwork } from './protocol.js';

/** A DockerEngine that answers from a map the test fills, as Docker does once a network is stored. */
export class FakeEngine implements DockerEngine {
  readonly networks = new Map<string, EngineNetwork>();
  readonly containers = new Map<string, EngineContainer>();
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

  async container(id: string): Promise<EngineContainer | undefined> {
    this.calls++;
    return this.containers.get(id);
  }

  /** A running container joined to a network through an endpoint, as Docker shows it. */
  run(networkId: string, endpointId: string, id: string, name: string, pid: number, aliases: string[] = []): void {
    const net = this.networks.get(networkId);
    if (!net) throw new Error(`no network ${networkId}`);
    net.Containers = { ...(net.Containers ?? {}), [id]: { Name: name, EndpointID: endpointId } };
    this.containers.set(id, {
      Id: id,
      Name: `/${name}`,
      State: { Pid: pid, Running: true },
      NetworkSettings: { Networks: { [net.Name]: { EndpointID: endpointId, Aliases: aliases } } },
    });
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
