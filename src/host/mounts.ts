import { readdirSync, readFileSync, statSync } from 'node:fs';

/*
 * Where a named network namespace must be mounted to outlive the process that makes it
 * (docs/plumbing.md "The vtep namespace's mount"). `ip netns add NAME` bind-mounts the namespace on
 * /run/netns/NAME in the mount namespace it runs in. A process started under `ip netns exec`, or in a
 * container whose /run/netns is not shared, has a mount namespace of its own whose /run/netns sends
 * nothing back: the mount dies with that mount namespace and leaves an empty file behind.
 */

export const NETNS_RUN_DIR = '/run/netns';

/** One line of /proc/PID/mountinfo (proc(5)), the fields veil needs. */
export interface MountEntry {
  readonly id: number;
  readonly mountPoint: string;
  /** Peer group this mount shares mount events with ("shared:N"). */
  readonly shared?: number;
  /** Peer group this mount receives mount events from ("master:N"). */
  readonly master?: number;
}

/** Undoes mountinfo's octal escapes (\040 for a space, \011, \012, \134). */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-');
    if (fields.length < 7 || separator < 6) continue;
    let shared: number | undefined;
    let master: number | undefined;
    for (const optional of fields.slice(6, separator)) {
      const [tag, value] = optional.split(':');
      if (tag === 'shared') shared = Number(value);
      else if (tag === 'master') master = Number(value);
    }
    entries.push({
      id: Number(fields[0]),
      mountPoint: unescapeMountinfo(fields[4]!),
      ...(shared !== undefined ? { shared } : {}),
      ...(master !== undefined ? { master } : {}),
    });
  }
  return entries;
}

/** The mount `path` lies on: the deepest mount point above it, the last one mounted there when stacked. */
export function mountAt(entries: readonly MountEntry[], path: string): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const e of entries) {
    const covers = e.mountPoint === '/' || path === e.mountPoint || path.startsWith(`${e.mountPoint}/`);
    if (covers && (!best || e.mountPoint.length >= best.mountPoint.length)) best = e;
  }
  return best;
}

function describe(e: MountEntry): string {
  const tags = [
    e.shared !== undefined ? `shared:${e.shared}` : '',
    e.master !== undefined ? `master:${e.master}` : '',
  ].filter(Boolean);
  return `mount ${e.mountPoint} (${tags.length > 0 ? tags.join(' ') : 'private'})`;
}

/**
 * Where named namespaces go: this process's mount namespace ("own"), the mount namespace of one of
 * `pids` ("enter": /run/netns here is a slave of theirs, so a mount made there reaches both), or
 * nowhere that outlives this mount namespace ("refuse", with the reason naming the mount).
 */
export type NetnsMountPlan =
  | { readonly kind: 'own' }
  | { readonly kind: 'enter'; readonly pids: readonly number[] }
  | { readonly kind: 'refuse'; readonly reason: string };

export interface OtherMountNamespace {
  readonly pid: number;
  readonly mounts: readonly MountEntry[];
}

/**
 * Decides from mountinfo alone. `others` are processes in other mount namespaces (one each), and are
 * only needed when /run/netns here is a slave: the plan then enters one whose /run/netns is the
 * shared, non-slave master of ours (the mount namespace that owns /run/netns), pid 1 first.
 */
export function planNetnsMounts(
  own: readonly MountEntry[],
  others: readonly OtherMountNamespace[],
  dir = NETNS_RUN_DIR,
): NetnsMountPlan {
  const here = mountAt(own, dir);
  if (!here) return { kind: 'own' };
  if (here.master !== undefined) {
    const owners = others
      .filter((o) => {
        const there = mountAt(o.mounts, dir);
        return there !== undefined && there.shared === here.master && there.master === undefined;
      })
      .map((o) => o.pid)
      .sort((a, b) => a - b);
    if (owners.length > 0) return { kind: 'enter', pids: owners };
    return {
      kind: 'refuse',
      reason:
        `${dir} lies on ${describe(here)} in the gateway's mount namespace: it receives mounts from peer group ` +
        `${here.master} but sends none back, and no process visible here is in the mount namespace that owns that group. ` +
        `A namespace mounted there would vanish with this mount namespace. Run the gateway in the mount namespace that ` +
        `owns ${dir}, or share ${dir} with it (podman/docker: -v ${dir}:${dir}:rshared)`,
    };
  }
  if (here.shared !== undefined) return { kind: 'own' };
  if (here.mountPoint === dir) {
    return {
      kind: 'refuse',
      reason:
        `${dir} is a private mount in the gateway's mount namespace (a container volume without shared propagation?): ` +
        `namespaces mounted there never reach the host and vanish with this mount namespace. Mount it shared ` +
        `(podman/docker: -v ${dir}:${dir}:rshared)`,
    };
  }
  // Not a mount point yet: `ip netns add` makes it one, shared (ip-netns(8)).
  return { kind: 'own' };
}

/** This process's mount namespace and, when /run/netns here is a slave, the others it can see. */
export function readNetnsMountPlan(dir = NETNS_RUN_DIR): NetnsMountPlan {
  const own = parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
  if (mountAt(own, dir)?.master === undefined) return planNetnsMounts(own, [], dir);
  return planNetnsMounts(own, otherMountNamespaces(), dir);
}

/** One process per mount namespace other than this one, pid 1 first; those it may not inspect are skipped. */
function otherMountNamespaces(): OtherMountNamespace[] {
  const seen = new Set<number>([statSync('/proc/self/ns/mnt').ino]);
  const pids = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => pid !== process.pid)
    .sort((a, b) => a - b);
  const out: OtherMountNamespace[] = [];
  for (const pid of pids) {
    try {
      const ino = statSync(`/proc/${pid}/ns/mnt`).ino;
      if (seen.has(ino)) continue;
      seen.add(ino);
      out.push({ pid, mounts: parseMountinfo(readFileSync(`/proc/${pid}/mountinfo`, 'utf8')) });
    } catch {
      // gone meanwhile, or not ours to inspect
    }
  }
  return out;
}

/** What a named namespace's file holds, seen from a mount namespace's root ("" for this process's). */
export type NetnsFileState =
  { readonly kind: 'absent' } | { readonly kind: 'stale' } | { readonly kind: 'live'; readonly ino: number };

/**
 * A namespace file holds a namespace when it is a bind mount of one: then it lives on nsfs, the
 * device of every /proc/PID/ns/* file. The empty file `ip netns add` made, whose mount is gone, is on
 * the filesystem of /run/netns instead.
 */
export function netnsFileState(path: string, root = ''): NetnsFileState {
  let st;
  try {
    st = statSync(`${root}${path}`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' };
    throw err;
  }
  return st.dev === statSync('/proc/self/ns/net').dev ? { kind: 'live', ino: st.ino } : { kind: 'stale' };
}
