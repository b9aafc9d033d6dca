// Host plumbing: the vtep namespace, per-network bridge + kernel VXLAN device, container veths
// and the VXLAN FDB that steers each peer's frames to that peer's gateway address.
//
//  container netns ──veth──┐
//  container netns ──veth──┤  br<VNI> ── vx<VNI> (kernel VXLAN, nolearning)        vtep netns
//                          │    FDB: MAC | 00:00:00:00:00:00 → 169.254.64.<peer index> port 1021
//                          └──────────────────────────────────────── to-host 169.254.x.2/30
//                                                                        │ veth
//  host netns:   gateway socket *:1021 on to-vtep ─────────────────── to-vtep 169.254.x.1/30
//
// A plain network's vx<VNI> is made from the host netns (docs/plumbing.md "Plain networks"): it lives
// in the vtep netns but its UDP socket stays in the host netns, on the underlay address, and its FDB
// points at the peers' underlay addresses; the host netns's table inet veil_underlay lets VXLAN in only
// from peers, and counts an encrypted network's VNI arriving in the clear.
//
// Naming (every interface name fits IFNAMSIZ − 1 = 15 characters):
//   to-vtep / to-host     the veth pair between host netns and vtep netns (named by where it leads)
//   br<VNI>, vx<VNI>      bridge and VXLAN device of a network; VNI ≤ 16777215 → at most 10 chars
//   ve<12 hex>            vtep-side end of a container veth: sha256("<VNI>/<endpointId>"), 14 chars,
//                         so it is derived again from (VNI, endpoint) on detach without any state
// Address plan: the veth pair uses one /30 inside 169.254.0.0/16 (RFC 3927 link-local): .1 host side,
// .2 vtep side. A /30 holds exactly those two and leaves the rest of 169.254/16 alone (clouds use
// 169.254.169.254 for metadata, so 169.254.169.0/24 is refused; RFC 3927 §2.1 reserves .0.x and .255.x).
//
// No local injection (docs/plumbing.md "No local injection"): a process of the host netns can reach 169.254.x.2:4789. The vtep
// netns holds an nftables table (inet veil) that lets UDP to 4789 in only from the gateway's delivery
// socket, 169.254.x.1:1022 over to-host; a port below 1024 cannot be bound without CAP_NET_BIND_SERVICE.
// Everything else to 4789 is counted (counter vtep_injection) and dropped. The table lives and dies with
// the vtep netns, so the VTEP stays closed while no gateway runs.
//
// Port security (docs/plumbing.md "Port security"): each container port ve<hash> is pinned to its
// container's MAC and IPv4 address. The table bridge veil_ports drops (and counts) a frame from a port
// whose source MAC, IPv4 source or ARP sender is not the port's own, and anything but IPv4 and ARP; the
// bridge learns nothing from a container port and holds its MAC as a static, sticky FDB entry, so no
// frame (not even a link-local one, which bridges learn from outside every netfilter hook) moves it.
//
// The vtep netns is mounted where it outlives the gateway (docs/plumbing.md "The vtep namespace's
// mount"): in the mount namespace that owns /run/netns, entered with nsenter when the gateway runs in a
// slave of it (`ip netns exec`); a namespace file whose mount is gone is made again.
//
// Everything here is control plane: operations are serialized, idempotent, and throw PlumbingError
// carrying the failing argv and its stderr. Commands are argv arrays, never shell strings.

import { existsSync, statSync } from 'node:fs';
import {
  batchScript,
  execRunner,
  parseCommandJson,
  PlumbingError,
  SerialQueue,
  type CommandResult,
  type CommandRunner,
} from '../host/exec.js';
import {
  bridgeName,
  endpointLinkName,
  HOST_LINK,
  hostPortLinkName,
  IFNAME_RE,
  VTEP_LINK,
  vxlanName,
} from '../host/names.js';
import {
  NETNS_RUN_DIR,
  netnsFileState,
  readNetnsMountPlan,
  type NetnsFileState,
  type NetnsMountPlan,
} from '../host/mounts.js';
import { execIn, ipBatchIn, netnsArg, netnsPath, type NetnsRef } from '../host/netns.js';
import { applyNftScript, readNamedCounters, readNftCounter, type NftCounter } from '../host/nft.js';
import { formatIpv4, isIpv4, parseCidr, parseIpv4 } from '../model/ipv4.js';
import { MAC_RE, ZERO_MAC } from '../model/mac.js';
import { overlayMtu, VTEP_DELIVERY_PORT, VTEP_GATEWAY_PORT, VXLAN_PORT } from './wire/constants.js';
import { DEFAULT_PEER_NET, inPeerNet, PEER_NET_PREFIX_LENGTH, peerNetRefusal } from '../model/peer-net.js';
import { DEFAULT_PLAIN_PATH, type PlainPath } from '../model/plain-path.js';
import type { VtepKind } from '../model/vtep.js';
/** nftables table (family inet) of the vtep netns, and its named counter of refused VXLAN datagrams. */
export const VTEP_FIREWALL_TABLE = 'veil';
export const VTEP_FIREWALL_COUNTER = 'vtep_injection';

/**
 * The vtep netns's firewall as one nft script (one transaction: all of it or nothing). Idempotent:
 * `add` keeps an existing table, counter and chain, `flush` replaces the rules; the counter keeps
 * its count. The bridge path is not affected (no br_netfilter: bridged frames never reach inet hooks).
 */
export function vtepFirewallScript(hostAddress: string): string {
  if (!isIpv4(hostAddress)) throw new RangeError(`invalid IPv4 address ${hostAddress}`);
  const t = `inet ${VTEP_FIREWALL_TABLE}`;
  return [
    `add table ${t}`,
    `add counter ${t} ${VTEP_FIREWALL_COUNTER}`,
    `add chain ${t} input { type filter hook input priority filter; policy accept; }`,
    `flush chain ${t} input`,
    `add rule ${t} input udp dport ${VXLAN_PORT} iifname "${VTEP_LINK}" ip saddr ${hostAddress} udp sport ${VTEP_DELIVERY_PORT} accept`,
    `add rule ${t} input udp dport ${VXLAN_PORT} counter name "${VTEP_FIREWALL_COUNTER}" drop`,
  ].join('\n');
}

/** What the vtep netns's firewall refused: datagrams to the VTEP's port 4789 not from the gateway. */
export type VtepFirewallCounter = NftCounter;

/**
 * nftables table (family inet) of the host netns in front of the plain networks' kernel VXLAN sockets
 * (docs/plumbing.md "Plain networks"), its sets and its counters.
 */
export const UNDERLAY_FIREWALL_TABLE = 'veil_underlay';
/** The peers' underlay addresses: the only sources plain VXLAN is taken from. */
export const UNDERLAY_PEERS_SET = 'peers';
/** The VNIs of this host's encrypted networks: plain VXLAN claiming one is a downgrade. */
export const ENCRYPTED_VNIS_SET = 'encrypted_vnis';
export const NOT_A_PEER_COUNTER = 'vxlan_not_peer';
export const PLAINTEXT_ON_ENCRYPTED_COUNTER = 'plaintext_on_encrypted';
/** The VNI of a VXLAN datagram in nft's terms: bits 96..119 after the UDP header's start (RFC 7348 §5). */
const NFT_VXLAN_VNI = '@th,96,24';

/**
 * The underlay firewall as one nft transaction. Idempotent like vtepFirewallScript: `add` keeps the
 * table, its counts and its sets' elements (peers stay allowed across a gateway restart).
 */
export function underlayFirewallScript(): string {
  const t = `inet ${UNDERLAY_FIREWALL_TABLE}`;
  const vxlan = `udp dport ${VXLAN_PORT}`;
  return [
    `add table ${t}`,
    `add counter ${t} ${NOT_A_PEER_COUNTER}`,
    `add counter ${t} ${PLAINTEXT_ON_ENCRYPTED_COUNTER}`,
    `add set ${t} ${UNDERLAY_PEERS_SET} { type ipv4_addr; }`,
    `add set ${t} ${ENCRYPTED_VNIS_SET} { typeof ${NFT_VXLAN_VNI}; }`,
    `add chain ${t} input { type filter hook input priority filter; policy accept; }`,
    `flush chain ${t} input`,
    // The devices' sockets are IPv4 (local is the IPv4 underlay address); nothing over IPv6 is a peer.
    `add rule ${t} input meta nfproto ipv6 ${vxlan} counter name "${NOT_A_PEER_COUNTER}" drop`,
    `add rule ${t} input ${vxlan} ip saddr != @${UNDERLAY_PEERS_SET} counter name "${NOT_A_PEER_COUNTER}" drop`,
    `add rule ${t} input ${vxlan} ${NFT_VXLAN_VNI} @${ENCRYPTED_VNIS_SET} counter name "${PLAINTEXT_ON_ENCRYPTED_COUNTER}" drop`,
  ].join('\n');
}

/** Adds (`add`) or removes elements of a set of the underlay firewall; removing a missing one is a no-op. */
function underlaySetScript(op: 'add' | 'delete', set: string, element: string): string {
  const t = `inet ${UNDERLAY_FIREWALL_TABLE}`;
  const lines = [`add element ${t} ${set} { ${element} }`];
  // nft 1.0.6 has no `destroy`: adding first makes the delete always find it.
  if (op === 'delete') lines.push(`delete element ${t} ${set} { ${element} }`);
  return lines.join('\n');
}

/** The kernel plain path's counters: what the underlay firewall refused, and each plain network's device. */
export interface PlainNetworkCounters {
  readonly notAPeer: NftCounter;
  readonly plaintextOnEncrypted: NftCounter;
  readonly networks: ReadonlyArray<{
    readonly vni: number;
    readonly rxPackets: number;
    readonly rxBytes: number;
    readonly txPackets: number;
    readonly txBytes: number;
    readonly rxDropped: number;
    readonly txDropped: number;
  }>;
}

/** nftables table (family bridge) of the vtep netns that pins each container port to its MAC and IPv4 address. */
export const PORT_SECURITY_TABLE = 'veil_ports';
/** Frames from a container port with a source MAC, IPv4 source or ARP sender that is not the port's own. */
export const PORT_SPOOFED_COUNTER = 'port_spoofed';
/** Frames from a container port that are neither IPv4 nor ARP (IPv6 among them: no IPv6 address is a port's own). */
export const PORT_NOT_IPV4_COUNTER = 'port_not_ipv4';
/** Port name → verdict (a jump to the port's own chain). */
const PORT_MAP = 'ports';
/** The vtep-side veth of a container (src/host/names.ts endpointLinkName). */
const PORT_RE = /^ve[0-9a-f]{12}$/;

/**
 * The port security table without any port, as one nft transaction. Idempotent like vtepFirewallScript;
 * the map and the per-port chains are left as they are (attachContainer and detachContainer own them).
 * A container port the map does not name passes nothing: a port is pinned before it is enslaved.
 * Frames from the VXLAN device (remote containers) and from the bridge itself are not filtered here.
 */
export function portSecurityScript(): string {
  const t = `bridge ${PORT_SECURITY_TABLE}`;
  return [
    `add table ${t}`,
    `add counter ${t} ${PORT_SPOOFED_COUNTER}`,
    `add counter ${t} ${PORT_NOT_IPV4_COUNTER}`,
    `add map ${t} ${PORT_MAP} { type ifname : verdict; }`,
    `add chain ${t} prerouting { type filter hook prerouting priority filter; policy accept; }`,
    `flush chain ${t} prerouting`,
    `add rule ${t} prerouting iifname vmap @${PORT_MAP}`,
    `add rule ${t} prerouting iifname "ve*" counter name "${PORT_SPOOFED_COUNTER}" drop`,
  ].join('\n');
}

function checkPortName(port: string): string {
  if (!PORT_RE.test(port)) throw new RangeError(`not a container port name: ${port}`);
  return port;
}

/**
 * One port's chain and map entry, in one transaction (replaces what the port had). Only its own MAC
 * leaves it, and of that only IPv4 from its own address and ARP (Ethernet/IPv4, RFC 826) whose sender
 * is its own MAC and address. Everything else from the port is dropped: veil networks are IPv4-only
 * and have no DHCP, so an IPv6 or 0.0.0.0 source is nobody's own.
 */
export function portRulesScript(port: string, mac: string, ipv4: string): string {
  const t = `bridge ${PORT_SECURITY_TABLE}`;
  const chain = `port_${checkPortName(port)}`;
  const lower = mac.toLowerCase();
  if (!MAC_RE.test(lower)) throw new RangeError(`invalid MAC address ${mac}`);
  if (!isIpv4(ipv4)) throw new RangeError(`invalid IPv4 address ${ipv4}`);
  return [
    `add chain ${t} ${chain}`,
    `flush chain ${t} ${chain}`,
    `add rule ${t} ${chain} ether saddr != ${lower} counter name "${PORT_SPOOFED_COUNTER}" drop`,
    `add rule ${t} ${chain} ether type ip ip saddr ${ipv4} accept`,
    `add rule ${t} ${chain} ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether ${lower} arp saddr ip ${ipv4} accept`,
    `add rule ${t} ${chain} ether type { ip, arp } counter name "${PORT_SPOOFED_COUNTER}" drop`,
    `add rule ${t} ${chain} counter name "${PORT_NOT_IPV4_COUNTER}" drop`,
    `add element ${t} ${PORT_MAP} { "${port}" : jump ${chain} }`,
  ].join('\n');
}

/**
 * Removes ports' map entries and chains in one transaction, whether they exist or not: each is added
 * first (a no-op when present), so the deletes always find it (nft 1.0.6 has no `destroy`).
 */
export function portRemovalScript(ports: readonly string[]): string {
  const t = `bridge ${PORT_SECURITY_TABLE}`;
  return ports
    .flatMap((port) => {
      const chain = `port_${checkPortName(port)}`;
      return [
        `add chain ${t} ${chain}`,
        `add element ${t} ${PORT_MAP} { "${port}" : jump ${chain} }`,
        `delete element ${t} ${PORT_MAP} { "${port}" }`,
        `flush chain ${t} ${chain}`,
        `delete chain ${t} ${chain}`,
      ];
    })
    .join('\n');
}

/** What port security dropped (docs/plumbing.md "Port security"). */
export interface PortSecurityCounters {
  readonly spoofed: NftCounter;
  readonly notIpv4: NftCounter;
}

export interface NetworkSpec {
  readonly vni: number;
  readonly encrypted: boolean;
  /** An encrypted network's frames meet the gateway at a TAP port (no vx<VNI>) or at vx<VNI> (default). */
  readonly vtep?: VtepKind;
}

export interface ContainerAttachment {
  readonly vni: number;
  /** Stable id of the endpoint; with the VNI it names the vtep-side veth. */
  readonly endpointId: string;
  readonly netns: NetnsRef;
  readonly mac: string;
  /** Address with prefix length, e.g. "10.42.0.5/24". */
  readonly ipv4: string;
  /** Default route via this address when given. */
  readonly gateway?: string;
  /** Defaults to the network's MTU (read from its VXLAN device). */
  readonly mtu?: number;
  /** Name inside the container; default "eth0". */
  readonly ifName?: string;
}

/** A container port whose other end stays in the host namespace, for a runtime to move (Docker's Join). */
export interface HostPortAttachment {
  readonly vni: number;
  readonly endpointId: string;
  readonly mac: string;
  /** The container's address (no prefix): the port is pinned to it and to the MAC. */
  readonly ipv4: string;
}

/**
 * A remote VXLAN FDB entry of a network: frames for `mac` go to dst:port, one peer's gateway address
 * (port 1021) or, for a plain network in the kernel, its underlay address (port 4789).
 */
export interface FdbEntry {
  readonly mac: string;
  readonly dst: string;
  readonly port: number;
}

/** The seam between the gateway and the host's network stack. Every operation is idempotent. */
export interface Plumbing {
  /** The host end of the vtep link (169.254.x.1): deliveries to the VTEP leave from it. */
  readonly hostAddress: string;
  /**
   * The peer net (a /18, src/model/peer-net.ts): local in the host netns and routed there from the
   * vtep netns, so each peer's gateway address reaches the gateway (docs/plumbing.md "Gateway addresses").
   */
  readonly peerNet: string;
  /** The VTEP's address in the vtep netns (169.254.x.2); inbound datagrams go to it on port 4789. */
  readonly vtepAddress: string;
  /** How plain networks reach the underlay (src/model/plain-path.ts). */
  readonly plainPath: PlainPath;
  /**
   * vtep netns, lo up in both namespaces, the to-vtep/to-host veth pair and its /30, and the vtep netns's
   * firewall (only hostAddress:VTEP_DELIVERY_PORT may send to the VTEP). Refuses a host netns where
   * that port can be bound without privilege (net.ipv4.ip_unprivileged_port_start lowered).
   */
  ensureHost(): Promise<void>;
  /** Removes the vtep netns (with every network and container veth in it, and its firewall) and the veth pair. */
  teardownHost(): Promise<void>;
  /** Datagrams the vtep netns's firewall refused (docs/plumbing.md "No local injection"); optional for fakes. */
  vtepFirewallDrops?(): Promise<VtepFirewallCounter>;
  /** Frames port security dropped (docs/plumbing.md "Port security"); optional for fakes. */
  portSecurityDrops?(): Promise<PortSecurityCounters>;
  /** The kernel plain path's counters (docs/plumbing.md "Plain networks"); optional for fakes. */
  plainNetworkCounters?(): Promise<PlainNetworkCounters>;
  /**
   * The path MTU the host namespace learned toward each of these underlay addresses (an ICMP
   * "fragmentation needed", RFC 1191), for those that have one (docs/wire.md "MTU"); optional for fakes.
   */
  pathMtus?(addresses: readonly string[]): Promise<Map<string, number>>;
  /**
   * Bridge br<VNI> and VXLAN vx<VNI> (dstport 4789, nolearning, MTU from overlayMtu): local vtepAddress,
   * or for a plain network in the kernel the underlay address, its socket in the host netns. An encrypted
   * network with `vtep: 'tap'` gets the bridge only (and loses a vx<VNI> left from before): its TAP port
   * comes from the data path (attachTapPort).
   */
  ensureNetwork(spec: NetworkSpec): Promise<void>;
  /** Removes vx<VNI>, br<VNI> and the container veths attached to it (a TAP port goes with the data path's network). */
  removeNetwork(vni: number): Promise<void>;
  /** The vtep netns's file: where the data path makes a network's TAP port (docs/plumbing.md "The TAP port"). */
  readonly vtepNetnsFile: string;
  /** Puts the TAP port the data path made in the vtep netns on br<VNI>, at the overlay MTU, up. */
  attachTapPort(vni: number, name: string): Promise<void>;
  /** The container's veth on br<VNI>, its port pinned to the container's MAC and IPv4 address. */
  attachContainer(attachment: ContainerAttachment): Promise<void>;
  /** Removes the container's veth and its port's pinning. */
  detachContainer(vni: number, endpointId: string): Promise<void>;
  /**
   * A port on br<VNI> pinned like attachContainer's, whose other end (MAC set, the network's MTU, down)
   * is left in the host namespace under the returned name for a runtime to move into the container.
   * An old port of the endpoint is replaced. detachContainer removes it.
   */
  attachHostPort(attachment: HostPortAttachment): Promise<string>;
  /**
   * Flood (BUM) entry: 00:00:00:00:00:00 → dst, one per peer of the network. `dst` is the peer's gateway
   * address (port VTEP_GATEWAY_PORT), or its underlay address (port 4789) on a plain network in the kernel.
   */
  ensurePeerFlood(vni: number, dst: string): Promise<void>;
  /** Unicast entry: mac → dst, as for ensurePeerFlood (replaces a previous peer of that MAC). */
  ensurePeerMac(vni: number, mac: string, dst: string): Promise<void>;
  removePeerMac(vni: number, mac: string): Promise<void>;
  /** Removes every entry of the network pointing at `dst`, as for ensurePeerFlood (flood and unicast). */
  removePeer(vni: number, dst: string): Promise<void>;
  /** Remote entries of the network's VXLAN FDB. */
  listFdb(vni: number): Promise<FdbEntry[]>;
  /** Removes exactly this entry (one listFdb returned), wherever it points. */
  removeFdbEntry(vni: number, entry: FdbEntry): Promise<void>;
  /**
   * Kernel plain path: plain VXLAN from this underlay address is let in (the underlay firewall's peers).
   * Several peers may share one address; the caller removes it when the last one goes.
   */
  ensureUnderlayPeer(address: string): Promise<void>;
  removeUnderlayPeer(address: string): Promise<void>;
  /** The underlay firewall's peers (none on the gateway plain path). */
  listUnderlayPeers(): Promise<string[]>;
}

/**
 * A container's namespace must not be the gateway's own (the host's network namespace) nor the vtep
 * netns: moving a veth end and addresses into either would make it a host on the overlay. Compared by
 * namespace inode.
 */
function refuseOwnNamespace(ref: NetnsRef, hostNetns: string | undefined, vtepNetns: string): void {
  const path = netnsPath(ref);
  let target: { dev: number; ino: number };
  try {
    target = statSync(path);
  } catch (err) {
    throw new PlumbingError(
      ['attachContainer', path],
      null,
      `cannot open network namespace ${path}: ${(err as Error).message}`,
    );
  }
  const own = statSync(hostNetns ? `/run/netns/${hostNetns}` : '/proc/self/ns/net');
  if (target.dev === own.dev && target.ino === own.ino) {
    throw new PlumbingError(
      ['attachContainer', path],
      null,
      `${path} is the host's own network namespace, not a container's`,
    );
  }
  const vtep = netnsFileState(`${NETNS_RUN_DIR}/${vtepNetns}`);
  if (vtep.kind === 'live' && target.dev === statSync('/proc/self/ns/net').dev && target.ino === vtep.ino) {
    throw new PlumbingError(['attachContainer', path], null, `${path} is the vtep namespace, not a container's`);
  }
}

export interface IproutePlumbingConfig {
  /** Name of the vtep netns (created under /run/netns). */
  readonly vtepNetns: string;
  /** The gateway's netns; undefined = the netns this process runs in. */
  readonly hostNetns?: string;
  /** Network address of the /30 for the veth pair, e.g. "169.254.47.0". */
  readonly linkNet?: string;
  /** The peer net's network address (default DEFAULT_PEER_NET). */
  readonly peerNet?: string;
  readonly underlayMtu?: number;
  /** The host's underlay address (--cluster-advertise): plain networks' VXLAN devices use it. */
  readonly underlayAddress?: string;
  /** How plain networks reach the underlay; default DEFAULT_PLAIN_PATH ('kernel' needs underlayAddress). */
  readonly plainPath?: PlainPath;
  readonly runner?: CommandRunner;
  /** Where named namespaces are mounted (default: read from /proc, see host/mounts.ts). */
  readonly netnsMountPlan?: () => NetnsMountPlan;
  readonly log?: (level: 'info' | 'warn', event: string, fields?: Record<string, unknown>) => void;
}

export const DEFAULT_LINK_NET = '169.254.47.0';
export const LINK_PREFIX_LENGTH = 30;

/**
 * Rethrows unless `ip` or `bridge` said the device is not there (or, with `entryToo`, that `bridge fdb
 * del` found no such entry): removals that find nothing to remove are done.
 */
function unlessGone(err: unknown, entryToo = false): void {
  const gone = entryToo ? /Cannot find device|does not exist|No such file/ : /Cannot find device|does not exist/;
  if (!(err instanceof PlumbingError && gone.test(err.stderr))) throw err;
}

export class IproutePlumbing implements Plumbing {
  readonly hostAddress: string;
  readonly vtepAddress: string;
  readonly peerNet: string;
  readonly vtepNetns: string;
  readonly hostNetns: string | undefined;
  readonly underlayMtu: number;
  readonly plainPath: PlainPath;
  readonly underlayAddress: string | undefined;
  /** Plain networks whose vx<VNI> is in the kernel path (ensureNetwork made or found it). */
  private readonly kernelPlainVnis = new Set<number>();
  private readonly run: CommandRunner;
  private readonly queue = new SerialQueue();
  private readonly readMountPlan: () => NetnsMountPlan;
  private readonly log: (level: 'info' | 'warn', event: string, fields?: Record<string, unknown>) => void;
  private mountPlan: NetnsMountPlan | undefined;

  constructor(config: IproutePlumbingConfig) {
    const link = parseIpv4(config.linkNet ?? DEFAULT_LINK_NET);
    const third = link === undefined ? -1 : (link >>> 8) & 0xff;
    if (
      link === undefined ||
      link >>> 16 !== 0xa9fe ||
      third === 0 ||
      third === 255 ||
      third === 169 ||
      link % 4 !== 0
    ) {
      throw new RangeError(
        `linkNet must be a /30 network address in 169.254.1.0–169.254.254.252 outside 169.254.169.0/24, got ${String(config.linkNet)}`,
      );
    }
    this.hostAddress = formatIpv4(link + 1);
    this.vtepAddress = formatIpv4(link + 2);
    this.peerNet = config.peerNet ?? DEFAULT_PEER_NET;
    const refusal = peerNetRefusal(this.peerNet);
    if (refusal) throw new RangeError(refusal);
    if (inPeerNet(this.peerNet, formatIpv4(link)))
      throw new RangeError(
        `linkNet ${formatIpv4(link)}/30 lies in the peer net ${this.peerNet}/${PEER_NET_PREFIX_LENGTH}`,
      );
    this.vtepNetns = config.vtepNetns;
    this.hostNetns = config.hostNetns;
    this.underlayMtu = config.underlayMtu ?? 1500;
    overlayMtu(this.underlayMtu, true); // validates
    this.plainPath = config.plainPath ?? DEFAULT_PLAIN_PATH;
    this.underlayAddress = config.underlayAddress;
    if (this.plainPath === 'kernel' && (this.underlayAddress === undefined || !isIpv4(this.underlayAddress)))
      throw new RangeError(
        `plain networks in the kernel need the underlay address, got ${String(this.underlayAddress)}`,
      );
    this.run = config.runner ?? execRunner;
    this.readMountPlan = config.netnsMountPlan ?? (() => readNetnsMountPlan());
    this.log = config.log ?? (() => undefined);
  }

  ensureHost(): Promise<void> {
    return this.serial(async () => {
      await this.checkDeliveryPortPrivileged();
      await this.ensureVtepNetns();
      await this.ipHost(['link', 'set', 'lo', 'up']);
      await this.ipVtep(['link', 'set', 'lo', 'up']);
      // Before any VXLAN device exists: the VTEP is never open to the host netns, not even briefly.
      await applyNftScript(this.run, this.vtepNetns, vtepFirewallScript(this.hostAddress));
      // Before any bridge exists: no container port ever passes a frame unpinned.
      await applyNftScript(this.run, this.vtepNetns, portSecurityScript());
      // Before any plain network's device opens UDP 4789 in the host netns: only peers may send to it.
      if (this.plainPath === 'kernel') await applyNftScript(this.run, this.hostNetns, underlayFirewallScript());
      const hostSide = await this.linkInfo('host', HOST_LINK);
      const vtepSide = await this.linkInfo('vtep', VTEP_LINK);
      if (
        !hostSide ||
        !vtepSide ||
        hostSide.linkinfo?.info_kind !== 'veth' ||
        vtepSide.linkinfo?.info_kind !== 'veth'
      ) {
        // Half a pair (or a foreign device of that name): start over.
        if (hostSide) await this.ipHost(['link', 'del', HOST_LINK]);
        if (vtepSide) await this.ipVtep(['link', 'del', VTEP_LINK]);
        const mtu = String(this.underlayMtu);
        await this.ipHost([
          'link',
          'add',
          HOST_LINK,
          'mtu',
          mtu,
          'type',
          'veth',
          'peer',
          'name',
          VTEP_LINK,
          'mtu',
          mtu,
          'netns',
          this.vtepNetns,
        ]);
      }
      // The veth carries whole VXLAN datagrams (all of them on the gateway plain path): the underlay's MTU.
      const mtu = String(this.underlayMtu);
      const cidr = `/${LINK_PREFIX_LENGTH}`;
      await this.ipHost(['addr', 'replace', this.hostAddress + cidr, 'dev', HOST_LINK]);
      await this.ipHost(['link', 'set', HOST_LINK, 'mtu', mtu, 'up']);
      await this.ipVtep(['addr', 'replace', this.vtepAddress + cidr, 'dev', VTEP_LINK]);
      await this.ipVtep(['link', 'set', VTEP_LINK, 'mtu', mtu, 'up']);
      // Gateway addresses (docs/plumbing.md "Gateway addresses"): the whole peer net is local on the
      // host end (one route, no address per peer; it goes with the link), and the VTEP reaches it
      // through the host end (one neighbour entry, whatever the number of peers).
      const peerNet = `${this.peerNet}/${PEER_NET_PREFIX_LENGTH}`;
      await this.ipHost(['route', 'replace', 'local', peerNet, 'dev', HOST_LINK, 'table', 'local']);
      await this.ipVtep(['route', 'replace', peerNet, 'via', this.hostAddress, 'dev', VTEP_LINK]);
      // A container's TCP leaves with CHECKSUM_PARTIAL (veth offload). Encapsulated by the kernel
      // VXLAN and delivered locally to the gateway's socket, its inner checksum would never be
      // filled in, and the far container would drop every segment. Without tx offload on the
      // VTEP end of this veth the kernel completes checksums (and segments) before the hand-over.
      await execIn(this.run, this.vtepNetns, ['ethtool', '-K', VTEP_LINK, 'tx', 'off']);
      // NAPI GRO on the host end: the native data path's gateway socket (UDP_GRO) then receives a burst
      // from the VTEP as one coalesced datagram instead of one by one (iperf3 TCP: 2.1 → 2.7 Gbit/s here).
      await execIn(this.run, this.hostNetns, ['ethtool', '-K', HOST_LINK, 'gro', 'on']);
      // The vtep namespace must not be a host on the overlays it bridges: without IPv6 its bridges and
      // veths get no link-local address, answer nothing and send no router solicitations or MLD
      // reports into every network. "all" covers the links that exist, "default" those made later.
      await this.run('ip', [
        'netns',
        'exec',
        this.vtepNetns,
        'sysctl',
        '-q',
        '-w',
        'net.ipv6.conf.all.disable_ipv6=1',
        'net.ipv6.conf.default.disable_ipv6=1',
      ]);
      // Where br_netfilter is loaded, bridged frames would also traverse iptables in this namespace:
      // pointless for an overlay segment, and it halved batched throughput here. -e: hosts without
      // the module have no such keys.
      await this.run('ip', [
        'netns',
        'exec',
        this.vtepNetns,
        'sysctl',
        '-e',
        '-q',
        '-w',
        'net.bridge.bridge-nf-call-iptables=0',
        'net.bridge.bridge-nf-call-ip6tables=0',
        'net.bridge.bridge-nf-call-arptables=0',
      ]);
    });
  }

  teardownHost(): Promise<void> {
    return this.serial(async () => {
      if (await this.linkInfo('host', HOST_LINK)) await this.ipHost(['link', 'del', HOST_LINK]);
      // Plain networks' devices first, at once: a process still in the vtep netns would keep them (and
      // their sockets in this netns) alive past the netns's file, and the firewall goes last.
      if (this.plainPath === 'kernel' && (await this.vtepNetnsLive()))
        for (const link of await this.jsonLinks(['link', 'show', 'type', 'vxlan']))
          if (link.link_netnsid !== undefined) await this.ipVtep(['link', 'del', link.ifname]);
      this.mountPlan ??= this.readMountPlan();
      // Refused at start: nothing of ours is mounted; an existing file is left for whoever made it.
      if (this.mountPlan.kind !== 'refuse') {
        const owner = this.netnsOwner(this.mountPlan);
        if (netnsFileState(this.vtepNetnsPath, owner.root).kind !== 'absent')
          await owner.ipNetns(['del', this.vtepNetns]);
      }
      // Last: the plain networks' devices (and their UDP sockets here) went with the vtep netns.
      this.kernelPlainVnis.clear();
      if (this.plainPath === 'kernel')
        await applyNftScript(
          this.run,
          this.hostNetns,
          `add table inet ${UNDERLAY_FIREWALL_TABLE}\ndelete table inet ${UNDERLAY_FIREWALL_TABLE}`,
        );
    });
  }

  ensureNetwork(spec: NetworkSpec): Promise<void> {
    return this.serial(async () => {
      const br = bridgeName(spec.vni);
      const vx = vxlanName(spec.vni);
      const mtu = String(overlayMtu(this.underlayMtu, spec.encrypted));
      const inKernel = !spec.encrypted && this.plainPath === 'kernel';
      const tap = spec.encrypted && spec.vtep === 'tap';
      // Before the device: plain VXLAN claiming an encrypted VNI is counted from the start, and a VNI an
      // encrypted network had before (deleted while no gateway ran) no longer refuses this plain one.
      if (this.plainPath === 'kernel')
        await applyNftScript(
          this.run,
          this.hostNetns,
          underlaySetScript(spec.encrypted ? 'add' : 'delete', ENCRYPTED_VNIS_SET, String(spec.vni)),
        );
      const bridge = await this.linkInfo('vtep', br);
      const bridgeOk = bridge?.linkinfo?.info_kind === 'bridge';
      if (bridge && !bridgeOk) await this.ipVtep(['link', 'del', br]);
      const vxlan = await this.linkInfo('vtep', vx);
      const data = vxlan?.linkinfo?.info_data;
      const local = inKernel ? this.underlayAddress! : this.vtepAddress;
      const matches =
        vxlan?.linkinfo?.info_kind === 'vxlan' &&
        data?.id === spec.vni &&
        data.local === local &&
        // The underlay of a kernel plain device is another netns (the host's); the others' is their own.
        (vxlan.link_netnsid !== undefined) === inKernel &&
        data.port === VXLAN_PORT &&
        data.learning === false;
      // With a TAP port the kernel device must go: both would carry every frame.
      if (vxlan && (!matches || tap)) await this.ipVtep(['link', 'del', vx]);
      const device = ['mtu', mtu, 'type', 'vxlan', 'id', String(spec.vni), 'local', local];
      device.push('dstport', String(VXLAN_PORT), 'nolearning');
      // A plain network's device is made from the host netns straight into the vtep netns: its UDP
      // socket (0.0.0.0:4789) and its underlay stay where it was made (docs/plumbing.md "Plain networks").
      if (!matches && inKernel) await this.ipHost(['link', 'add', vx, 'netns', this.vtepNetns, ...device]);
      // The rest in one `ip -batch`. No IGMP snooping: the bridge would join 224.0.0.106 and send IGMP
      // reports into the overlay itself; flooding multicast to every port is what an overlay segment does.
      await this.run(
        'ip',
        ['-n', this.vtepNetns, '-batch', '-'],
        batchScript([
          bridgeOk
            ? ['link', 'set', br, 'type', 'bridge', 'mcast_snooping', '0']
            : ['link', 'add', br, 'mtu', mtu, 'type', 'bridge', 'mcast_snooping', '0'],
          ...(!matches && !inKernel && !tap ? [['link', 'add', vx, ...device]] : []),
          ['link', 'set', br, 'mtu', mtu, 'up'],
          ...(tap ? [] : [['link', 'set', vx, 'master', br, 'mtu', mtu, 'up']]),
        ]),
      );
      if (inKernel) this.kernelPlainVnis.add(spec.vni);
    });
  }

  attachTapPort(vni: number, name: string): Promise<void> {
    return this.serial(async () => {
      const mtu = String(overlayMtu(this.underlayMtu, true));
      await this.ipVtep(['link', 'set', name, 'master', bridgeName(vni), 'mtu', mtu, 'up']);
    });
  }

  get vtepNetnsFile(): string {
    return this.vtepNetnsPath;
  }

  removeNetwork(vni: number): Promise<void> {
    return this.serial(async () => {
      const br = bridgeName(vni);
      const vx = vxlanName(vni);
      // No look-ups first: a device already gone (a half-done earlier removal) is fine.
      const ports = await this.jsonLinks(['link', 'show', 'master', br]).catch((err: unknown): LinkJson[] => {
        unlessGone(err);
        return [];
      });
      const pinned: string[] = [];
      for (const port of ports) {
        if (port.ifname !== vx && port.linkinfo?.info_kind !== 'vxlan') {
          await this.ipVtep(['link', 'del', port.ifname]).catch((err: unknown) => unlessGone(err));
          if (PORT_RE.test(port.ifname)) pinned.push(port.ifname);
        }
      }
      if (pinned.length > 0) await applyNftScript(this.run, this.vtepNetns, portRemovalScript(pinned));
      await this.ipVtep(['link', 'del', vx]).catch((err: unknown) => unlessGone(err));
      await this.ipVtep(['link', 'del', br]).catch((err: unknown) => unlessGone(err));
      this.kernelPlainVnis.delete(vni);
      if (this.plainPath === 'kernel')
        await applyNftScript(this.run, this.hostNetns, underlaySetScript('delete', ENCRYPTED_VNIS_SET, String(vni)));
    });
  }

  attachContainer(a: ContainerAttachment): Promise<void> {
    return this.serial(async () => {
      const br = bridgeName(a.vni);
      const outer = endpointLinkName(a.vni, a.endpointId);
      const inner = a.ifName ?? 'eth0';
      const mac = a.mac.toLowerCase();
      if (!MAC_RE.test(mac)) throw new RangeError(`invalid MAC address ${a.mac}`);
      if (!IFNAME_RE.test(inner)) throw new RangeError(`invalid interface name ${inner}`);
      if (!parseCidr(a.ipv4)) throw new RangeError(`invalid IPv4 address/prefix ${a.ipv4}`);
      if (a.gateway !== undefined && !isIpv4(a.gateway)) throw new RangeError(`invalid IPv4 address ${a.gateway}`);
      const address = parseCidr(a.ipv4)!.address;
      refuseOwnNamespace(a.netns, this.hostNetns, this.vtepNetns);
      const bridge = await this.networkBridge('attachContainer', a.vni);
      const mtu = String(a.mtu ?? bridge.mtu);
      // Pinned before the port exists: its first frame already meets its rules (docs/plumbing.md "Port security").
      await applyNftScript(this.run, this.vtepNetns, portRulesScript(outer, mac, formatIpv4(address)));
      // Made on the bridge and down; a port left by an earlier attach of the endpoint is kept (File exists).
      const made = await this.ipVtep([
        'link',
        'add',
        outer,
        'mtu',
        mtu,
        'master',
        br,
        'type',
        'veth',
        'peer',
        'name',
        inner,
        'address',
        mac,
        'mtu',
        mtu,
        'netns',
        netnsArg(a.netns),
      ]).then(
        () => true,
        async (err: unknown) => {
          if (err instanceof PlumbingError && /File exists/.test(err.stderr)) return false;
          // No port (the container's namespace is gone, say): no pinning left behind for it either.
          await applyNftScript(this.run, this.vtepNetns, portRemovalScript([outer]));
          throw err;
        },
      );
      if (made) await this.pinPort(outer, mac);
      else await this.portOnBridge(outer, br, mac, mtu);
      // Inside the container, one `ip -batch`: each command is its own process otherwise (nsenter and ip).
      await ipBatchIn(this.run, a.netns, [
        ['link', 'set', 'lo', 'up'],
        ['link', 'set', inner, 'address', mac, 'mtu', mtu, 'up'],
        ['addr', 'replace', a.ipv4, 'dev', inner],
        ...(a.gateway !== undefined ? [['route', 'replace', 'default', 'via', a.gateway, 'dev', inner]] : []),
      ]);
    });
  }

  attachHostPort(a: HostPortAttachment): Promise<string> {
    return this.serial(async () => {
      const br = bridgeName(a.vni);
      const outer = endpointLinkName(a.vni, a.endpointId);
      const hostEnd = hostPortLinkName(a.vni, a.endpointId);
      const mac = a.mac.toLowerCase();
      if (!MAC_RE.test(mac)) throw new RangeError(`invalid MAC address ${a.mac}`);
      if (!isIpv4(a.ipv4)) throw new RangeError(`invalid IPv4 address ${a.ipv4}`);
      const mtu = String((await this.networkBridge('attachHostPort', a.vni)).mtu);
      // A port left from an earlier join of the endpoint goes: the runtime asks for a fresh interface.
      if (await this.linkInfo('vtep', outer)) await this.ipVtep(['link', 'del', outer]);
      if (await this.linkInfo('host', hostEnd)) await this.ipHost(['link', 'del', hostEnd]);
      await applyNftScript(this.run, this.vtepNetns, portRulesScript(outer, mac, a.ipv4));
      await this.ipHost([
        'link',
        'add',
        hostEnd,
        'address',
        mac,
        'mtu',
        mtu,
        'type',
        'veth',
        'peer',
        'name',
        outer,
        'mtu',
        mtu,
        'netns',
        this.vtepNetns,
      ]).catch(async (err: unknown) => {
        await applyNftScript(this.run, this.vtepNetns, portRemovalScript([outer]));
        throw err;
      });
      await this.portOnBridge(outer, br, mac, mtu);
      return hostEnd;
    });
  }

  detachContainer(vni: number, endpointId: string): Promise<void> {
    return this.serial(async () => {
      const outer = endpointLinkName(vni, endpointId);
      // Deleting one end of a veth deletes the other, inside the container; a port already gone is fine.
      await this.ipVtep(['link', 'del', outer]).catch((err: unknown) => unlessGone(err));
      await applyNftScript(this.run, this.vtepNetns, portRemovalScript([outer]));
    });
  }

  ensurePeerFlood(vni: number, dst: string): Promise<void> {
    return this.serial(async () => {
      // `append` adds one more destination to the all-zero (default) entry; appending an existing
      // destination is a no-op in the kernel (vxlan_fdb_append finds the rdst), so this is idempotent.
      const to = this.fdbDestination(vni, dst);
      await this.bridgeVtep(['fdb', 'append', ZERO_MAC, 'dev', vxlanName(vni), 'dst', to.dst, 'port', to.port]);
    });
  }

  ensurePeerMac(vni: number, mac: string, dst: string): Promise<void> {
    return this.serial(async () => {
      // `replace`, not `append`: a unicast MAC lives behind exactly one peer, and for an existing unicast
      // entry the kernel ignores `append` while returning success, so a MAC that moved would keep its old peer.
      const to = this.fdbDestination(vni, dst);
      const unicast = checkUnicastMac(mac);
      await this.bridgeVtep(['fdb', 'replace', unicast, 'dev', vxlanName(vni), 'dst', to.dst, 'port', to.port]);
    });
  }

  removePeerMac(vni: number, mac: string): Promise<void> {
    return this.serial(async () => {
      // Without dst the kernel deletes the MAC's entry whichever peer it points at (vxlan_fdb_delete);
      // an entry or a device already gone is fine.
      await this.bridgeVtep(['fdb', 'del', checkUnicastMac(mac), 'dev', vxlanName(vni)]).catch((err: unknown) =>
        unlessGone(err, true),
      );
    });
  }

  removePeer(vni: number, dst: string): Promise<void> {
    return this.serial(async () => {
      this.fdbDestination(vni, dst);
      for (const e of await this.fdb(vni)) {
        if (e.dst === dst) await this.delFdb(vni, e);
      }
    });
  }

  listFdb(vni: number): Promise<FdbEntry[]> {
    return this.serial(() => this.fdb(vni));
  }

  removeFdbEntry(vni: number, entry: FdbEntry): Promise<void> {
    return this.serial(async () => {
      if (!isIpv4(entry.dst) || !Number.isInteger(entry.port) || entry.port < 1 || entry.port > 65_535)
        throw new RangeError(`not an FDB destination: ${entry.dst}:${entry.port}`);
      const mac = entry.mac === ZERO_MAC ? ZERO_MAC : checkUnicastMac(entry.mac);
      for (const e of await this.fdb(vni))
        if (e.mac === mac && e.dst === entry.dst && e.port === entry.port) await this.delFdb(vni, e);
    });
  }

  ensureUnderlayPeer(address: string): Promise<void> {
    return this.serial(async () => {
      if (this.plainPath !== 'kernel') return;
      const peer = checkUnderlayPeer(address, this.peerNet);
      await applyNftScript(this.run, this.hostNetns, underlaySetScript('add', UNDERLAY_PEERS_SET, peer));
    });
  }

  removeUnderlayPeer(address: string): Promise<void> {
    return this.serial(async () => {
      if (this.plainPath !== 'kernel') return;
      const peer = checkUnderlayPeer(address, this.peerNet);
      await applyNftScript(this.run, this.hostNetns, underlaySetScript('delete', UNDERLAY_PEERS_SET, peer));
    });
  }

  listUnderlayPeers(): Promise<string[]> {
    return this.serial(async () => {
      if (this.plainPath !== 'kernel') return [];
      const { stdout } = await execIn(this.run, this.hostNetns, [
        'nft',
        '-j',
        'list',
        'set',
        'inet',
        UNDERLAY_FIREWALL_TABLE,
        UNDERLAY_PEERS_SET,
      ]);
      const doc = parseCommandJson<{ nftables?: Array<{ set?: { name?: string; elem?: unknown[] } }> }>(
        stdout,
        'nft -j list set',
      );
      const elems = doc.nftables?.find((e) => e.set?.name === UNDERLAY_PEERS_SET)?.set?.elem ?? [];
      return elems.filter((e): e is string => typeof e === 'string');
    });
  }

  plainNetworkCounters(): Promise<PlainNetworkCounters> {
    return this.serial(async () => {
      const { notAPeer, plaintextOnEncrypted } = await readNamedCounters(
        this.run,
        this.hostNetns,
        'inet',
        UNDERLAY_FIREWALL_TABLE,
        { notAPeer: NOT_A_PEER_COUNTER, plaintextOnEncrypted: PLAINTEXT_ON_ENCRYPTED_COUNTER },
        'underlay firewall',
      );
      const networks: Array<PlainNetworkCounters['networks'][number]> = [];
      for (const link of await this.jsonLinks(['-s', 'link', 'show', 'type', 'vxlan'])) {
        const vni = link.linkinfo?.info_data?.id;
        if (link.link_netnsid === undefined || vni === undefined || !link.stats64) continue;
        const { rx, tx } = link.stats64;
        networks.push({
          vni,
          rxPackets: rx.packets,
          rxBytes: rx.bytes,
          txPackets: tx.packets,
          txBytes: tx.bytes,
          rxDropped: rx.dropped,
          txDropped: tx.dropped,
        });
      }
      return { notAPeer, plaintextOnEncrypted, networks: networks.sort((a, b) => a.vni - b.vni) };
    });
  }

  /** One `ip -batch` for all addresses; it fails as a whole when one has no route (then nothing is known). */
  pathMtus(addresses: readonly string[]): Promise<Map<string, number>> {
    return this.serial(async () => {
      const found = new Map<string, number>();
      const valid = addresses.filter((a) => isIpv4(a));
      if (valid.length === 0) return found;
      const script = batchScript(valid.map((a) => ['route', 'get', a]));
      const host = this.hostNetns === undefined ? [] : ['-n', this.hostNetns];
      const { stdout } = await this.run('ip', [...host, '-j', '-batch', '-'], script);
      for (const line of stdout.split('\n')) {
        if (!line.startsWith('[')) continue;
        const routes = parseCommandJson<Array<{ dst?: string; metrics?: Array<{ mtu?: number }> }>>(
          line,
          'ip -j route get',
        );
        for (const route of routes) {
          // A learned path MTU is a route exception's "mtu" metric (RFC 1191, expires after 10 min).
          const mtu = route.metrics?.find((m) => m.mtu !== undefined)?.mtu;
          if (route.dst !== undefined && mtu !== undefined) found.set(route.dst, mtu);
        }
      }
      return found;
    });
  }

  vtepFirewallDrops(): Promise<VtepFirewallCounter> {
    return this.serial(() =>
      readNftCounter(this.run, this.vtepNetns, 'inet', VTEP_FIREWALL_TABLE, VTEP_FIREWALL_COUNTER),
    );
  }

  portSecurityDrops(): Promise<PortSecurityCounters> {
    return this.serial(async () => {
      return readNamedCounters(
        this.run,
        this.vtepNetns,
        'bridge',
        PORT_SECURITY_TABLE,
        { spoofed: PORT_SPOOFED_COUNTER, notIpv4: PORT_NOT_IPV4_COUNTER },
        'port security',
      );
    });
  }

  // ── internals ────────────────────────────────────────────────────────────────

  private get vtepNetnsPath(): string {
    return `${NETNS_RUN_DIR}/${this.vtepNetns}`;
  }

  /**
   * The vtep netns, mounted where it outlives this process: in the mount namespace that owns /run/netns
   * (docs/plumbing.md "The vtep namespace's mount"). A file there whose mount is gone (its gateway ran
   * in a mount namespace of its own and was killed) holds no namespace: it is made again, and so is
   * everything in it (networks by the gateway, containers' veths by the agent).
   */
  private async ensureVtepNetns(): Promise<void> {
    const path = this.vtepNetnsPath;
    this.mountPlan = this.readMountPlan();
    if (this.mountPlan.kind === 'refuse') {
      throw new PlumbingError(
        ['ensureHost', path],
        null,
        `the vtep namespace ${this.vtepNetns} would not outlive the gateway: ${this.mountPlan.reason}`,
      );
    }
    const owner = this.netnsOwner(this.mountPlan);
    const found = netnsFileState(path, owner.root);
    if (found.kind === 'stale') {
      // Its mount went with the mount namespace that made it (a gateway killed under `ip netns exec`).
      this.log('warn', 'vtep namespace file holds no namespace; making it again', { path });
      await owner.ipNetns(['del', this.vtepNetns]);
    }
    if (found.kind !== 'live') await owner.ipNetns(['add', this.vtepNetns]);
    const there = netnsFileState(path, owner.root);
    const here: NetnsFileState = owner.root === '' ? there : netnsFileState(path);
    if (there.kind !== 'live' || here.kind !== 'live' || here.ino !== there.ino) {
      if (found.kind !== 'live') await owner.ipNetns(['del', this.vtepNetns]).catch(() => undefined);
      throw new PlumbingError(
        ['ensureHost', path],
        null,
        `${path} holds the vtep namespace in the mount namespace of ${owner.what} but not in the gateway's: ` +
          `${NETNS_RUN_DIR} there does not propagate mounts to the gateway's mount namespace`,
      );
    }
    if (found.kind !== 'live' && owner.root !== '')
      this.log('info', 'vtep namespace mounted in the mount namespace that owns /run/netns', { path, via: owner.what });
  }

  /** Runs `ip netns …` where named namespaces are mounted, and reads files there (root: a path prefix). */
  private netnsOwner(plan: Exclude<NetnsMountPlan, { kind: 'refuse' }>): {
    root: string;
    what: string;
    ipNetns(args: readonly string[]): Promise<CommandResult>;
  } {
    if (plan.kind === 'own') {
      return { root: '', what: 'the gateway', ipNetns: (args) => this.run('ip', ['netns', ...args]) };
    }
    // The first of them still running (a process may end between the plan and now).
    const pid = plan.pids.find((p) => existsSync(`/proc/${p}/ns/mnt`)) ?? plan.pids[0]!;
    return {
      root: `/proc/${pid}/root`,
      what: `pid ${pid}`,
      ipNetns: (args) => this.run('nsenter', [`--mount=/proc/${pid}/ns/mnt`, '--', 'ip', 'netns', ...args]),
    };
  }

  private serial<T>(op: () => Promise<T>): Promise<T> {
    return this.queue.run(op);
  }

  /**
   * The firewall trusts the delivery socket's source port because an unprivileged process cannot bind
   * it. Where net.ipv4.ip_unprivileged_port_start has been lowered to or below it (some rootless container
   * setups do), any user could, so the VTEP would be open to local injection: refuse to plumb.
   */
  private async checkDeliveryPortPrivileged(): Promise<void> {
    const sysctl = ['sysctl', '-n', 'net.ipv4.ip_unprivileged_port_start'];
    const { stdout } = await execIn(this.run, this.hostNetns, sysctl);
    const start = Number(stdout.trim());
    if (!Number.isInteger(start) || start <= VTEP_DELIVERY_PORT) {
      throw new PlumbingError(
        sysctl,
        null,
        `net.ipv4.ip_unprivileged_port_start is ${stdout.trim()} in the gateway's netns: any user could ` +
          `bind the VTEP delivery port ${VTEP_DELIVERY_PORT} and inject VXLAN into local networks; set it above ${VTEP_DELIVERY_PORT} (default 1024)`,
      );
    }
  }

  private async fdb(vni: number): Promise<FdbEntry[]> {
    const vx = vxlanName(vni);
    if (!(await this.linkInfo('vtep', vx))) return [];
    const { stdout } = await this.bridgeVtep(['-j', 'fdb', 'show', 'dev', vx]);
    const rows = parseCommandJson<Array<{ mac?: string; dst?: string; port?: number }>>(stdout, 'bridge -j fdb show');
    const entries: FdbEntry[] = [];
    for (const r of rows) {
      // Remote entries carry dst; those without are the bridge's own (master) entries.
      if (r.mac !== undefined && r.dst !== undefined)
        entries.push({ mac: r.mac, dst: r.dst, port: r.port ?? VXLAN_PORT });
    }
    return entries;
  }

  /**
   * Where an FDB entry of the network may point. Through the gateway, only at a gateway address in the
   * peer net: anywhere else would send cleartext of an encrypted network off the host. A plain network
   * in the kernel points at peers' underlay addresses, at the VXLAN port.
   */
  private fdbDestination(vni: number, dst: string): { dst: string; port: string } {
    if (this.kernelPlainVnis.has(vni)) return { dst: checkUnderlayPeer(dst, this.peerNet), port: String(VXLAN_PORT) };
    if (!inPeerNet(this.peerNet, dst))
      throw new RangeError(`gateway address ${dst} is not in the peer net ${this.peerNet}/${PEER_NET_PREFIX_LENGTH}`);
    return { dst, port: String(VTEP_GATEWAY_PORT) };
  }

  private async vtepNetnsLive(): Promise<boolean> {
    try {
      await this.ipVtep(['link', 'show', 'lo']);
      return true;
    } catch {
      return false;
    }
  }

  private async delFdb(vni: number, e: FdbEntry): Promise<void> {
    await this.bridgeVtep(['fdb', 'del', e.mac, 'dev', vxlanName(vni), 'dst', e.dst, 'port', String(e.port)]);
  }

  /**
   * The network's bridge, once ensureNetwork made it, at the overlay MTU; its VTEP (vx<VNI> or a TAP
   * port) is the gateway's business, not a container port's.
   */
  private async networkBridge(op: string, vni: number): Promise<LinkJson> {
    const br = bridgeName(vni);
    const bridge = await this.linkInfo('vtep', br);
    if (!bridge)
      throw new PlumbingError(
        [op, String(vni)],
        null,
        `network ${vni} has no ${br} in netns ${this.vtepNetns}: call ensureNetwork first`,
      );
    return bridge;
  }

  /** A container's vtep-side veth end joins the bridge, its MAC pinned to it, and comes up. */
  private async portOnBridge(port: string, br: string, mac: string, mtu: string): Promise<void> {
    await this.ipVtep(['link', 'set', port, 'master', br, 'mtu', mtu]);
    await this.pinPort(port, mac);
  }

  /** A port already on its bridge: its MAC pinned to it, then up. */
  private async pinPort(port: string, mac: string): Promise<void> {
    // The bridge learns from link-local frames (01:80:c2:00:00:0x) outside every netfilter hook, and
    // learning would let one such frame take over another container's MAC. A container port learns
    // nothing; its own MAC is a static entry no frame from any port can move (sticky).
    await this.run(
      'bridge',
      ['-n', this.vtepNetns, '-batch', '-'],
      batchScript([
        ['link', 'set', 'dev', port, 'learning', 'off'],
        ['fdb', 'replace', mac, 'dev', port, 'master', 'static', 'sticky'],
      ]),
    );
    await this.ipVtep(['link', 'set', port, 'up']);
  }

  private async linkInfo(where: 'host' | 'vtep', ifname: string): Promise<LinkJson | undefined> {
    const args = ['-d', '-j', 'link', 'show', 'dev', ifname];
    try {
      const { stdout } = where === 'host' ? await this.ipHost(args) : await this.ipVtep(args);
      return parseCommandJson<LinkJson[]>(stdout, 'ip -j link show')[0];
    } catch (err) {
      if (err instanceof PlumbingError && /does not exist/.test(err.stderr)) return undefined;
      throw err;
    }
  }

  private async jsonLinks(args: readonly string[]): Promise<LinkJson[]> {
    const { stdout } = await this.ipVtep(['-d', '-j', ...args]);
    return stdout.trim() === '' ? [] : parseCommandJson<LinkJson[]>(stdout, 'ip -j link show');
  }

  private ipHost(args: readonly string[]): Promise<CommandResult> {
    return this.run('ip', this.hostNetns === undefined ? args : ['-n', this.hostNetns, ...args]);
  }
  private ipVtep(args: readonly string[]): Promise<CommandResult> {
    return this.run('ip', ['-n', this.vtepNetns, ...args]);
  }
  private bridgeVtep(args: readonly string[]): Promise<CommandResult> {
    return this.run('bridge', ['-n', this.vtepNetns, ...args]);
  }
}

interface LinkJson {
  ifname: string;
  mtu: number;
  master?: string;
  /** Set when the link's underlay is another netns (a plain network's device in the kernel path). */
  link_netnsid?: number;
  linkinfo?: { info_kind?: string; info_data?: { id?: number; local?: string; port?: number; learning?: boolean } };
  stats64?: Record<'rx' | 'tx', { packets: number; bytes: number; dropped: number }>;
}

/**
 * A peer's underlay address as a plain VXLAN destination or source: unicast IPv4 off this host, and
 * not in the peer net (an FDB entry there would hand a plain network's frames to the gateway).
 */
function checkUnderlayPeer(address: string, peerNet: string): string {
  const a = parseIpv4(address);
  const first = a === undefined ? -1 : a >>> 24;
  if (a === undefined || first === 0 || first === 127 || first >= 224 || inPeerNet(peerNet, address))
    throw new RangeError(
      `${address} is not a peer's underlay address (unicast IPv4, not loopback, not in the peer net ${peerNet}/${PEER_NET_PREFIX_LENGTH})`,
    );
  return formatIpv4(a);
}

function checkUnicastMac(mac: string): string {
  const lower = mac.toLowerCase();
  if (!MAC_RE.test(lower) || lower === ZERO_MAC) throw new RangeError(`invalid unicast MAC address ${mac}`);
  return lower;
}
