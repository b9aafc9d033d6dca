import { batchScript, parseCommandJson, type CommandResult, type CommandRunner } from './exec.js';

/** A network namespace: a named one (/run/netns/<name>), a bind-mounted path, or a process's. */
export type NetnsRef = { readonly name: string } | { readonly path: string } | { readonly pid: number };

/** The namespace's file, which the kernel compares by inode. */
export function netnsPath(ref: NetnsRef): string {
  if ('name' in ref) return `/run/netns/${ref.name}`;
  if ('path' in ref) return ref.path;
  return `/proc/${ref.pid}/ns/net`;
}

/** `ip link ... netns X` accepts a name, a path (contains '/') or a pid. */
export function netnsArg(ref: NetnsRef): string {
  if ('name' in ref) return ref.name;
  if ('path' in ref) return ref.path;
  return String(ref.pid);
}

/** A path that is /run/netns/<name> gives that name (what `ip -n` opens); any other path gives undefined. */
export function runNetnsName(path: string): string | undefined {
  const m = /^\/run\/netns\/([^/]+)$/.exec(path);
  return m && m[1] !== '.' && m[1] !== '..' ? m[1] : undefined;
}

/**
 * Runs `ip ARGS` in the namespace: `ip -n` takes only names under /run/netns (a path there counts as its
 * name, a process saved), any other path or a pid goes through nsenter.
 */
export function ipIn(
  run: CommandRunner,
  ref: NetnsRef,
  args: readonly string[],
  input?: string,
): Promise<CommandResult> {
  const name = 'name' in ref ? ref.name : 'path' in ref ? runNetnsName(ref.path) : undefined;
  if (name !== undefined) return run('ip', ['-n', name, ...args], input);
  return run('nsenter', [`--net=${netnsPath(ref)}`, '--', 'ip', ...args], input);
}

/** Several `ip` commands in the namespace in one run (ip -batch): one process, not one per command. */
export function ipBatchIn(
  run: CommandRunner,
  ref: NetnsRef,
  commands: ReadonlyArray<readonly string[]>,
): Promise<CommandResult> {
  return ipIn(run, ref, ['-batch', '-'], batchScript(commands));
}

/**
 * Runs a command in a named namespace, or in this process's own when `name` is undefined. nsenter
 * enters the network namespace only: what veil runs this way (nft, sysctl, ethtool) talks netlink,
 * ioctl or /proc/sys, all of which follow it. `ip netns exec` would also make a mount namespace and
 * remount /sys for each command.
 */
export function execIn(run: CommandRunner, name: string | undefined, argv: readonly string[]): Promise<CommandResult> {
  if (name === undefined) return run(argv[0]!, argv.slice(1));
  return run('nsenter', [`--net=${netnsPath({ name })}`, '--', ...argv]);
}

/** The name of the interface with this MAC in the namespace, or undefined (none yet, or no namespace). */
export async function interfaceWithMac(run: CommandRunner, ref: NetnsRef, mac: string): Promise<string | undefined> {
  let links: Array<{ ifname: string; address?: string }>;
  try {
    links = parseCommandJson((await ipIn(run, ref, ['-j', 'link', 'show'])).stdout, 'ip -j link show');
  } catch {
    return undefined;
  }
  return links.find((l) => l.address?.toLowerCase() === mac.toLowerCase())?.ifname;
}

/** An interface inside a namespace as CNI CHECK compares it: its MAC and IPv4 addresses (CIDR). */
export interface InterfaceState {
  readonly mac: string;
  readonly ipv4: readonly string[];
}

/** The interface of that name in the namespace, or undefined (no such interface, or no namespace). */
export async function interfaceNamed(
  run: CommandRunner,
  ref: NetnsRef,
  ifName: string,
): Promise<InterfaceState | undefined> {
  let links: Array<{
    ifname: string;
    address?: string;
    addr_info?: Array<{ family: string; local: string; prefixlen: number }>;
  }>;
  try {
    links = parseCommandJson((await ipIn(run, ref, ['-j', 'addr', 'show', 'dev', ifName])).stdout, 'ip -j addr show');
  } catch {
    return undefined;
  }
  const link = links.find((l) => l.ifname === ifName);
  if (!link) return undefined;
  return {
    mac: (link.address ?? '').toLowerCase(),
    ipv4: (link.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
  };
}

/** The interface that holds an IPv4 address in this process's namespace, with its MTU; undefined if none does. */
export async function interfaceWithAddress(
  run: CommandRunner,
  address: string,
): Promise<{ readonly ifname: string; readonly mtu: number } | undefined> {
  const links = parseCommandJson<
    Array<{ ifname: string; mtu: number; addr_info?: Array<{ family: string; local: string }> }>
  >((await run('ip', ['-j', 'addr', 'show'])).stdout, 'ip -j addr show');
  const link = links.find((l) => l.addr_info?.some((a) => a.family === 'inet' && a.local === address));
  return link ? { ifname: link.ifname, mtu: link.mtu } : undefined;
}
