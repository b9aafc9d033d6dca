// Plumbing for the embedded resolver: how a container reaches its host's resolver, and only it.
//
//  container netns                         vtep netns
//   eth0 10.61.0.5/24 ──veth── br<VNI> (MAC pinned: 0e:…)   lo: 169.254.53.53/32 ← UDP+TCP 53 (the gateway's sockets)
//   route 169.254.53.53/32 dev eth0         route <subnet> dev br<VNI> src 169.254.53.53
//   neigh 169.254.53.53 → br<VNI>'s MAC     neigh <container IP> → container MAC (both permanent)
//   /etc/netns/<name>/resolv.conf: nameserver 169.254.53.53, search <network>
//
// - The resolver address lives on lo, so the sockets exist before any network does; a container's
//   query reaches it because its neighbour entry sends the frame to the bridge's own MAC. Neither
//   side ever ARPs (permanent entries) and the vtep netns answers no ARP on a bridge (arp_ignore 8):
//   every host answers its own containers, nothing about 169.254.53.53 crosses the overlay.
// - The bridge's MAC is pinned (otherwise the kernel gives a bridge the lowest MAC of its ports, which
//   changes as containers come and go) to one derived from (host, VNI): stable across restarts.
// - Isolation: a query's source address names its network. Strict reverse-path filtering on the
//   bridges drops a source that does not belong to the bridge it came in on (subnets never overlap,
//   each has its route on its own bridge), no forwarding between bridges, and the table inet veil_dns
//   admits from the bridges only DNS to the resolver address: the vtep netns is no host on the overlay.
//
// Everything here is control plane: serialized, idempotent, argv arrays (vxlan/plumbing.ts style).

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { Socket as UdpSocket } from 'node:dgram';
import { constants as fsConstants } from 'node:fs';
import { lstat, mkdir, open, rename, rmdir, unlink } from 'node:fs/promises';
import type { Server as TcpServer } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Sandbox } from '../store/types.js';
import {
  execRunner,
  parseCommandJson,
  PlumbingError,
  SerialQueue,
  type CommandResult,
  type CommandRunner,
} from '../host/exec.js';
import { bridgeName, IFNAME_RE } from '../host/names.js';
import { execIn, ipBatchIn, type NetnsRef } from '../host/netns.js';
import { applyNftScript } from '../host/nft.js';
import { MAC_RE } from '../model/mac.js';
import { DNS_PORT, RESOLVER_ADDRESS } from './wire.js';
import { cidrContains, parseCidr, parseIpv4 } from '../model/ipv4.js';

/** nftables table (family inet) of the vtep netns that keeps containers to DNS on the resolver address. */
export const DNS_FIREWALL_TABLE = 'veil_dns';
export const DNS_FIREWALL_COUNTER = 'not_dns';

export function dnsFirewallScript(resolver: string): string {
  const t = `inet ${DNS_FIREWALL_TABLE}`;
  return [
    `add table ${t}`,
    `add counter ${t} ${DNS_FIREWALL_COUNTER}`,
    `add chain ${t} input { type filter hook input priority filter; policy accept; }`,
    `flush chain ${t} input`,
    `add rule ${t} input iifname "br*" ip daddr ${resolver} udp dport ${DNS_PORT} accept`,
    `add rule ${t} input iifname "br*" ip daddr ${resolver} tcp dport ${DNS_PORT} accept`,
    `add rule ${t} input iifname "br*" counter name "${DNS_FIREWALL_COUNTER}" drop`,
  ].join('\n');
}

/** The pinned MAC of br<VNI> on one host: locally administered unicast (0e:), from sha256(host, VNI). */
export function bridgeMac(hostId: string, vni: number): string {
  const h = createHash('sha256').update(`veil-dns/${hostId}/${vni}`).digest('hex');
  return ['0e', h.slice(0, 2), h.slice(2, 4), h.slice(4, 6), h.slice(6, 8), h.slice(8, 10)].join(':');
}

export interface ResolverSockets {
  readonly udp: UdpSocket;
  readonly tcp: TcpServer;
}

export interface DnsEndpoint {
  readonly vni: number;
  readonly netns: NetnsRef;
  /** Without prefix. */
  readonly ipv4: string;
  readonly mac: string;
  /** Inside the container; default "eth0" (as vxlan/plumbing.ts attaches it). */
  readonly ifName?: string;
}

/** The seam between the DNS service and the host (a fake in unit tests). Every operation is idempotent. */
export interface DnsPlumbing {
  readonly resolverAddress: string;
  /** The resolver address on lo of the vtep netns, its firewall, rp_filter, no IP forwarding. */
  ensureHost(): Promise<void>;
  /** The resolver's UDP socket and TCP server, bound inside the vtep netns and handed to this process. */
  openSockets(): Promise<ResolverSockets>;
  /** br<VNI>'s pinned MAC, no ARP answers, strict rp_filter, the route to the subnet. */
  ensureNetwork(vni: number, subnet: string): Promise<void>;
  /** Both permanent neighbour entries and the container's route to the resolver. */
  attachEndpoint(endpoint: DnsEndpoint): Promise<void>;
  /** The vtep's neighbour entry (the container's side left with its veth). */
  detachEndpoint(vni: number, ipv4: string): Promise<void>;
}

export interface IprouteDnsPlumbingConfig {
  readonly vtepNetns: string;
  /** Salt of the bridges' pinned MACs: the host's id. */
  readonly hostId: string;
  /** vxlan/plumbing.ts's host-vtep /30: the resolver address must not fall inside it. */
  readonly linkAddresses?: readonly string[];
  readonly resolverAddress?: string;
  readonly runner?: CommandRunner;
  /** The helper that binds the sockets (default: socket-helper.js beside this file) and its node. */
  readonly helper?: { readonly node: string; readonly script: string };
}

const HANDOVER_TIMEOUT_MS = 15_000;

export class IprouteDnsPlumbing implements DnsPlumbing {
  readonly resolverAddress: string;
  readonly #c: IprouteDnsPlumbingConfig;
  readonly #run: CommandRunner;
  readonly #queue = new SerialQueue();
  /** The bridge ensureNetwork last set up, per VNI, by ifindex. */
  readonly #bridgesDone = new Map<number, { ifindex: number; subnet: string }>();

  constructor(config: IprouteDnsPlumbingConfig) {
    this.#c = config;
    this.resolverAddress = config.resolverAddress ?? RESOLVER_ADDRESS;
    const resolver = parseIpv4(this.resolverAddress);
    if (resolver === undefined) throw new RangeError(`invalid resolver address ${this.resolverAddress}`);
    for (const a of config.linkAddresses ?? []) {
      const link = parseCidr(`${a}/30`);
      if (link && cidrContains(link, resolver))
        throw new RangeError(
          `the resolver address ${this.resolverAddress} lies in the host-vtep link ${a}/30: choose another --link-net`,
        );
    }
    this.#run = config.runner ?? execRunner;
  }

  ensureHost(): Promise<void> {
    return this.#serial(async () => {
      await this.#ipVtep(['addr', 'replace', `${this.resolverAddress}/32`, 'dev', 'lo']);
      // Routing stays off (a container must not reach another network through the vtep netns);
      // strict reverse-path filtering everywhere (max(all, dev) decides, so "all" must not say loose).
      await this.#sysctlVtep([
        'net.ipv4.ip_forward=0',
        'net.ipv4.conf.all.rp_filter=1',
        'net.ipv4.conf.default.rp_filter=1',
      ]);
      await applyNftScript(this.#run, this.#c.vtepNetns, dnsFirewallScript(this.resolverAddress));
    });
  }

  openSockets(): Promise<ResolverSockets> {
    const helper = this.#c.helper ?? {
      node: process.execPath,
      script: fileURLToPath(new URL('./socket-helper.js', import.meta.url)),
    };
    return openSocketsVia([
      'ip',
      'netns',
      'exec',
      this.#c.vtepNetns,
      helper.node,
      helper.script,
      this.resolverAddress,
      String(DNS_PORT),
    ]);
  }

  ensureNetwork(vni: number, subnet: string): Promise<void> {
    return this.#serial(async () => {
      if (!parseCidr(subnet)) throw new RangeError(`invalid subnet ${subnet}`);
      const br = bridgeName(vni);
      // Once per bridge: called for every container attached, it looks the bridge up (one command) and
      // sets it up again only when it is another bridge than the one set up last (the network was made again).
      const links = parseCommandJson<Array<{ ifindex: number }>>(
        (await this.#ipVtep(['-j', 'link', 'show', 'dev', br])).stdout,
        'ip -j link show',
      );
      const done = this.#bridgesDone.get(vni);
      if (done && done.ifindex === links[0]?.ifindex && done.subnet === subnet) return;
      this.#bridgesDone.delete(vni);
      await this.#ipVtep(['link', 'set', br, 'address', bridgeMac(this.#c.hostId, vni)]);
      await this.#sysctlVtep([`net.ipv4.conf.${br}.arp_ignore=8`, `net.ipv4.conf.${br}.rp_filter=1`]);
      await this.#ipVtep(['route', 'replace', subnet, 'dev', br, 'scope', 'link', 'src', this.resolverAddress]);
      if (links[0]) this.#bridgesDone.set(vni, { ifindex: links[0].ifindex, subnet });
    });
  }

  attachEndpoint(e: DnsEndpoint): Promise<void> {
    return this.#serial(async () => {
      const mac = e.mac.toLowerCase();
      const inner = e.ifName ?? 'eth0';
      if (!MAC_RE.test(mac)) throw new RangeError(`invalid MAC address ${e.mac}`);
      if (!IFNAME_RE.test(inner)) throw new RangeError(`invalid interface name ${inner}`);
      if (parseIpv4(e.ipv4) === undefined) throw new RangeError(`invalid IPv4 address ${e.ipv4}`);
      const br = bridgeName(e.vni);
      await this.#ipVtep(['neigh', 'replace', e.ipv4, 'lladdr', mac, 'dev', br, 'nud', 'permanent']);
      // One way to the resolver per container: through its first interface. A container on several networks
      // reaches it through eth0 (the resolver answers it for every network it is on).
      if (inner !== 'eth0') return;
      await ipBatchIn(this.#run, e.netns, [
        ['route', 'replace', `${this.resolverAddress}/32`, 'dev', inner, 'scope', 'link'],
        [
          'neigh',
          'replace',
          this.resolverAddress,
          'lladdr',
          bridgeMac(this.#c.hostId, e.vni),
          'dev',
          inner,
          'nud',
          'permanent',
        ],
      ]);
    });
  }

  detachEndpoint(vni: number, ipv4: string): Promise<void> {
    return this.#serial(async () => {
      if (parseIpv4(ipv4) === undefined) throw new RangeError(`invalid IPv4 address ${ipv4}`);
      try {
        await this.#ipVtep(['neigh', 'del', ipv4, 'dev', bridgeName(vni)]);
      } catch (err) {
        // Gone already: with its bridge (network removed) or never made.
        if (!(
          err instanceof PlumbingError &&
          /No such file|Cannot find device|does not exist|RTNETLINK answers: No such/i.test(err.stderr)
        ))
          throw err;
      }
    });
  }

  #serial<T>(op: () => Promise<T>): Promise<T> {
    return this.#queue.run(op);
  }

  #ipVtep(args: readonly string[]): Promise<CommandResult> {
    return this.#run('ip', ['-n', this.#c.vtepNetns, ...args]);
  }

  #sysctlVtep(settings: readonly string[]): Promise<CommandResult> {
    return execIn(this.#run, this.#c.vtepNetns, ['sysctl', '-q', '-w', ...settings]);
  }
}

/**
 * Runs the helper (argv), which binds a UDP socket and a TCP server inside the namespace it runs in
 * and sends both over the IPC channel; resolves with them once both arrived. The helper exits
 * right after: nothing to supervise, and the sockets live and die with this process.
 */
export function openSocketsVia(argv: readonly string[], timeoutMs = HANDOVER_TIMEOUT_MS): Promise<ResolverSockets> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    let stderr = '';
    let udp: UdpSocket | undefined;
    let tcp: TcpServer | undefined;
    let settled = false;
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      udp?.close();
      tcp?.close();
      if (child.exitCode === null) child.kill('SIGKILL');
      reject(new PlumbingError(argv, child.exitCode, `${why}${stderr ? `: ${stderr.trim()}` : ''}`));
    };
    const timer = setTimeout(() => fail('the DNS socket helper handed nothing over in time'), timeoutMs);
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => fail(err.message));
    child.on('exit', () => {
      // Messages (with their handles) can still be on their way: give them a turn.
      setImmediate(() => {
        if (!udp || !tcp) fail('the DNS socket helper exited before handing over its sockets');
      });
    });
    child.on('message', (message: unknown, handle: unknown) => {
      const kind = (message as { kind?: string } | null)?.kind;
      if (settled) {
        (handle as { close?: () => void } | undefined)?.close?.();
        return;
      }
      if (kind === 'udp') udp = handle as UdpSocket;
      else if (kind === 'tcp') tcp = handle as TcpServer;
      if (udp && tcp) {
        settled = true;
        clearTimeout(timer);
        resolve({ udp, tcp });
      }
    });
  });
}

// ── resolv.conf inside the container ─────────────────────────────────────────────────────────

/** First line of every resolv.conf veil writes: detach removes only files that carry it. */
export const RESOLV_CONF_MARK = "# veil: embedded DNS of this container's overlay networks";
/** glibc's MAXDNSRCH (resolv.h). */
const MAX_SEARCH = 6;
const SAVED_SUFFIX = '.veil-saved';

export function resolvConfText(resolver: string, searchDomains: readonly string[]): string {
  const search = [...new Set(searchDomains.map((d) => d.toLowerCase()))].slice(0, MAX_SEARCH);
  return `${RESOLV_CONF_MARK}\nnameserver ${resolver}\n${search.length > 0 ? `search ${search.join(' ')}\n` : ''}`;
}

export interface ResolvConfOptions {
  /** Where `ip netns exec NAME` finds the files it bind-mounts over /etc (ip-netns(8)); default /etc/netns. */
  readonly etcNetns?: string;
  /** Default /proc: a {pid} sandbox's root is /proc/<pid>/root. */
  readonly procRoot?: string;
}

/**
 * Writes a container's resolv.conf: for a named netns (/run/netns/NAME) the file `ip netns exec`
 * puts in place (/etc/netns/NAME/resolv.conf); for a {pid} sandbox the file in its root. A
 * resolv.conf veil did not write is kept aside and put back when the last network is gone.
 * Written in place (never renamed over): processes already inside see the bind-mounted inode change.
 */
export class ResolvConfWriter {
  readonly #etcNetns: string;
  readonly #procRoot: string;
  /** {pid} sandboxes: their original file, kept in memory (never next to it, in the container). */
  readonly #originals = new Map<string, Buffer>();

  constructor(options: ResolvConfOptions = {}) {
    this.#etcNetns = options.etcNetns ?? '/etc/netns';
    this.#procRoot = options.procRoot ?? '/proc';
  }

  /** Where the sandbox's resolv.conf is, or undefined when veil cannot know (a netns path not under /run/netns). */
  pathFor(sandbox: Sandbox): string | undefined {
    if ('pid' in sandbox) return join(this.#procRoot, String(sandbox.pid), 'root', 'etc', 'resolv.conf');
    if (dirname(sandbox.netns) !== '/run/netns' && dirname(sandbox.netns) !== '/var/run/netns') return undefined;
    const name = basename(sandbox.netns);
    if (!/^[A-Za-z0-9_.-]+$/.test(name) || name === '.' || name === '..') return undefined;
    return join(this.#etcNetns, name, 'resolv.conf');
  }

  async write(sandbox: Sandbox, text: string): Promise<string | undefined> {
    const path = this.pathFor(sandbox);
    if (!path) return undefined;
    const isPid = 'pid' in sandbox;
    if (isPid) {
      // The container's own /etc: follow no symlink it could plant (it would resolve on the host).
      const etc = await lstat(dirname(path));
      if (!etc.isDirectory()) throw new PlumbingError(['write', path], null, `${dirname(path)} is not a directory`);
    } else {
      await mkdir(dirname(path), { recursive: true });
    }
    const current = await readNoFollow(path);
    if (current !== undefined && !current.toString('utf8').startsWith(RESOLV_CONF_MARK)) {
      if (isPid) {
        if (!this.#originals.has(path)) this.#originals.set(path, current);
      } else if (!(await exists(path + SAVED_SUFFIX))) {
        await rename(path, path + SAVED_SUFFIX);
      }
    }
    const fh = await open(
      path,
      fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW,
      0o644,
    );
    try {
      await fh.writeFile(text, 'utf8');
    } finally {
      await fh.close();
    }
    return path;
  }

  /** Removes veil's file and puts back what was there before, if anything. */
  async remove(sandbox: Sandbox): Promise<void> {
    const path = this.pathFor(sandbox);
    if (!path) return;
    const current = await readNoFollow(path).catch(() => undefined);
    if (current === undefined || !current.toString('utf8').startsWith(RESOLV_CONF_MARK)) return;
    if ('pid' in sandbox) {
      const original = this.#originals.get(path);
      this.#originals.delete(path);
      const fh = await open(path, fsConstants.O_WRONLY | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW).catch(
        () => undefined,
      );
      if (!fh) return;
      try {
        await fh.writeFile(original ?? Buffer.alloc(0));
      } finally {
        await fh.close();
      }
      return;
    }
    await unlink(path);
    if (await exists(path + SAVED_SUFFIX)) await rename(path + SAVED_SUFFIX, path);
    else await rmdir(dirname(path)).catch(() => undefined); // only when empty: someone else's files stay
  }
}

async function readNoFollow(path: string): Promise<Buffer | undefined> {
  let fh;
  try {
    fh = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}
