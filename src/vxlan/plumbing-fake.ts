import { ZERO_MAC } from '../model/mac.js';
import { hostPortLinkName } from '../host/names.js';
import { DEFAULT_PEER_NET } from '../model/peer-net.js';
import type { PlainPath } from '../model/plain-path.js';
import { VTEP_GATEWAY_PORT, VXLAN_PORT } from './wire/constants.js';
import type { ContainerAttachment, FdbEntry, HostPortAttachment, NetworkSpec, Plumbing } from './plumbing.js';

/*
 * A Plumbing that touches no host: it keeps the networks, containers, VXLAN FDB and underlay peers
 * the Gateway programmed, so tests can read them back (and the in-process cluster can route by them).
 * Its plain path defaults to 'gateway': the in-process cluster has no kernel to carry plain networks.
 */
export class RecordingPlumbing implements Plumbing {
  readonly networks = new Map<number, NetworkSpec>();
  /** `${vni}/${endpointId}` → the attachment. */
  readonly containers = new Map<string, ContainerAttachment>();
  /** `${vni}/${endpointId}` → a port left in the host namespace for a runtime (attachHostPort). */
  readonly hostPorts = new Map<string, HostPortAttachment>();
  readonly fdb = new Map<number, FdbEntry[]>();
  /** The underlay firewall's peers (kernel plain path). */
  readonly underlayPeers = new Set<string>();
  /** attachContainer fails (as with a namespace that is gone). */
  failAttach = false;
  hostUp = false;

  constructor(
    readonly hostAddress = '169.254.9.1',
    readonly vtepAddress = '169.254.9.2',
    readonly peerNet = DEFAULT_PEER_NET,
    readonly plainPath: PlainPath = 'gateway',
  ) {}

  async ensureHost(): Promise<void> {
    this.hostUp = true;
  }

  async teardownHost(): Promise<void> {
    this.hostUp = false;
    this.networks.clear();
    this.containers.clear();
    this.hostPorts.clear();
    this.fdb.clear();
    this.underlayPeers.clear();
  }

  async ensureNetwork(spec: NetworkSpec): Promise<void> {
    this.networks.set(spec.vni, spec);
    if (!this.fdb.has(spec.vni)) this.fdb.set(spec.vni, []);
  }

  readonly vtepNetnsFile = '/run/netns/veil-vtep';
  /** TAP ports put on their bridges: vni → name. */
  readonly tapPorts = new Map<number, string>();

  async attachTapPort(vni: number, name: string): Promise<void> {
    if (!this.networks.has(vni)) throw new Error(`network ${vni} has no bridge: call ensureNetwork first`);
    this.tapPorts.set(vni, name);
  }

  async removeNetwork(vni: number): Promise<void> {
    this.tapPorts.delete(vni);
    this.networks.delete(vni);
    this.fdb.delete(vni);
    for (const [key, c] of this.containers) if (c.vni === vni) this.containers.delete(key);
    for (const [key, c] of this.hostPorts) if (c.vni === vni) this.hostPorts.delete(key);
  }

  async attachContainer(a: ContainerAttachment): Promise<void> {
    if (this.failAttach) throw new Error('Cannot open network namespace');
    this.containers.set(`${a.vni}/${a.endpointId}`, a);
  }

  async attachHostPort(a: HostPortAttachment): Promise<string> {
    if (this.failAttach) throw new Error('Cannot create the port');
    if (!this.networks.has(a.vni)) throw new Error(`network ${a.vni} has no bridge: call ensureNetwork first`);
    this.hostPorts.set(`${a.vni}/${a.endpointId}`, a);
    return hostPortLinkName(a.vni, a.endpointId);
  }

  async detachContainer(vni: number, endpointId: string): Promise<void> {
    this.containers.delete(`${vni}/${endpointId}`);
    this.hostPorts.delete(`${vni}/${endpointId}`);
  }

  async ensurePeerFlood(vni: number, dst: string): Promise<void> {
    const list = this.#entries(vni);
    if (!list.some((e) => e.mac === ZERO_MAC && e.dst === dst))
      list.push({ mac: ZERO_MAC, dst, port: this.#port(vni) });
  }

  async ensurePeerMac(vni: number, mac: string, dst: string): Promise<void> {
    this.fdb.set(vni, [...this.#entries(vni).filter((e) => e.mac !== mac), { mac, dst, port: this.#port(vni) }]);
  }

  async removePeerMac(vni: number, mac: string): Promise<void> {
    this.fdb.set(
      vni,
      this.#entries(vni).filter((e) => e.mac !== mac),
    );
  }

  async removePeer(vni: number, dst: string): Promise<void> {
    this.fdb.set(
      vni,
      this.#entries(vni).filter((e) => e.dst !== dst),
    );
  }

  async ensureUnderlayPeer(address: string): Promise<void> {
    if (this.plainPath === 'kernel') this.underlayPeers.add(address);
  }

  async removeUnderlayPeer(address: string): Promise<void> {
    this.underlayPeers.delete(address);
  }

  async listUnderlayPeers(): Promise<string[]> {
    return [...this.underlayPeers];
  }

  async removeFdbEntry(vni: number, entry: FdbEntry): Promise<void> {
    this.fdb.set(
      vni,
      this.#entries(vni).filter((e) => e.mac !== entry.mac || e.dst !== entry.dst || e.port !== entry.port),
    );
  }

  async listFdb(vni: number): Promise<FdbEntry[]> {
    return [...(this.fdb.get(vni) ?? [])];
  }

  /**
   * Where the VTEP would send a frame for `mac` (the kernel's VXLAN FDB lookup): the gateway
   * addresses of its unicast entry, else every flood entry.
   */
  gatewaysFor(vni: number, mac: string): string[] {
    const entries = this.fdb.get(vni) ?? [];
    const unicast = entries.filter((e) => e.mac === mac.toLowerCase());
    return (unicast.length > 0 ? unicast : entries.filter((e) => e.mac === ZERO_MAC)).map((e) => e.dst);
  }

  /** As IproutePlumbing: a plain network in the kernel points at peers' VXLAN port, the rest at gateway addresses. */
  #port(vni: number): number {
    return this.plainPath === 'kernel' && this.networks.get(vni)?.encrypted === false ? VXLAN_PORT : VTEP_GATEWAY_PORT;
  }

  #entries(vni: number): FdbEntry[] {
    let list = this.fdb.get(vni);
    if (!list) this.fdb.set(vni, (list = []));
    return list;
  }
}
