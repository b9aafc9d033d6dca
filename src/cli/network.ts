/*
 * `veil network ...` and `veil host ls`: the control plane from the shell, mirroring
 * `docker network` (same subcommands, flags and output columns).
 *
 * Exit codes: 0 ok; 1 the API refused or could not be reached (`veil: <message> (<code>)` on
 * stderr); 2 usage error (the message and the command's usage on stderr).
 */

import { writeFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { cniConfList } from '../cni/config.js';
import { installCni } from '../cni/install.js';
import { CNI_VERSIONS, type CniVersion } from '../cni/spec.js';
import { describeFlags, parseArgs, parseKeyValues, UsageError, type FlagSpecs, type ParsedFlags } from './args.js';
import {
  ApiClient,
  ApiError,
  resolveClientOptions,
  type ConnectRequest,
  type CreateNetworkRequest,
  type KeysView,
} from './client.js';
import { isOutputFormat, renderJson, renderTable, shortId, yesNo, type OutputFormat } from './format.js';

export interface CliIo {
  stdout: { write(chunk: string): unknown };
  stderr: { write(chunk: string): unknown };
  env: Readonly<Record<string, string | undefined>>;
}

/** Accepted before or after the subcommand: `veil --api X network ls` and `veil network ls --api X`. */
export const GLOBAL_FLAGS = {
  api: {
    kind: 'string',
    value: 'ADDR',
    help: 'the veil API: unix:/path/to.sock, http://127.0.0.1:PORT or https://host:port (env VEIL_API; default unix:/run/veil/veil.sock)',
  },
  'tls-ca': {
    kind: 'string',
    value: 'FILE',
    help: 'CA certificate that signed the API server certificate, for https (env VEIL_TLS_CA)',
  },
  'tls-cert': { kind: 'string', value: 'FILE', help: 'client certificate, for https (env VEIL_TLS_CERT)' },
  'tls-key': { kind: 'string', value: 'FILE', help: "the client certificate's key (env VEIL_TLS_KEY)" },
  format: { kind: 'string', value: 'table|json', help: 'output format (default table)' },
} as const satisfies FlagSpecs;

type Globals = ParsedFlags<typeof GLOBAL_FLAGS>;

interface Context<S extends FlagSpecs> {
  flags: ParsedFlags<S> & Globals;
  args: string[];
  format: OutputFormat;
  client: ApiClient;
  io: CliIo;
}

interface Command<S extends FlagSpecs = FlagSpecs> {
  /** After `veil <group> <name>`. */
  synopsis: string;
  summary: string;
  flags: S;
  args: { min: number; max: number };
  run(ctx: Context<S>): Promise<number>;
}

/** Keeps each command's flags typed inside its run() while the table holds them all. */
const command = <S extends FlagSpecs>(c: Command<S>): Command => c as unknown as Command;

const UNLIMITED = Number.POSITIVE_INFINITY;

function warn(io: CliIo, warning: string | undefined): void {
  if (warning) io.stderr.write(`WARNING: ${warning}\n`);
}

function reportError(io: CliIo, err: ApiError): void {
  io.stderr.write(`veil: ${err.message} (${err.code})\n`);
}

// ---- veil network ----

const create = command({
  synopsis: '[OPTIONS] NAME',
  summary: 'Create an overlay network',
  flags: {
    driver: { kind: 'string', short: 'd', value: 'DRIVER', help: 'network driver (only "overlay")' },
    opt: { kind: 'list', short: 'o', value: 'k=v', help: 'driver option, e.g. --opt encrypted, --opt strict' },
    attachable: { kind: 'boolean', help: 'let standalone containers attach' },
    internal: { kind: 'boolean', help: 'restrict external access to the network' },
    subnet: { kind: 'string', value: 'CIDR', help: 'IPv4 subnet, e.g. 10.0.9.0/24' },
    gateway: { kind: 'string', value: 'IP', help: "the subnet's gateway (default: its first address)" },
    'ip-range': { kind: 'string', value: 'CIDR', help: 'allocate endpoint addresses from this sub-range' },
    label: { kind: 'list', value: 'k=v', help: 'metadata label' },
  },
  args: { min: 1, max: 1 },
  async run({ flags, args, format, client, io }) {
    const driver = flags.driver ?? 'overlay';
    if (driver !== 'overlay') throw new UsageError(`--driver ${driver}: veil networks use the overlay driver`);
    if (flags.subnet === undefined && (flags.gateway !== undefined || flags['ip-range'] !== undefined)) {
      throw new UsageError('--gateway and --ip-range need --subnet');
    }
    const options = parseKeyValues(flags.opt, '--opt');
    const labels = parseKeyValues(flags.label, '--label');
    const body: CreateNetworkRequest = { Name: args[0]!, Driver: 'overlay' };
    if (flags.attachable !== undefined) body.Attachable = flags.attachable;
    if (flags.internal !== undefined) body.Internal = flags.internal;
    if (Object.keys(labels).length > 0) body.Labels = labels;
    if (Object.keys(options).length > 0) body.Options = options;
    // Without --subnet the API says why it needs one (veil has no default address pool).
    if (flags.subnet !== undefined) {
      body.IPAM = {
        Config: [
          {
            Subnet: flags.subnet,
            ...(flags.gateway !== undefined ? { Gateway: flags.gateway } : {}),
            ...(flags['ip-range'] !== undefined ? { IPRange: flags['ip-range'] } : {}),
          },
        ],
      };
    }
    const created = await client.createNetwork(body);
    warn(io, created.Warning);
    io.stdout.write(format === 'json' ? renderJson(created) : `${created.Id}\n`);
    return 0;
  },
});

const ls = command({
  synopsis: '[OPTIONS]',
  summary: 'List networks',
  flags: {},
  args: { min: 0, max: 0 },
  async run({ format, client, io }) {
    const networks = (await client.listNetworks()).sort((a, b) => a.Name.localeCompare(b.Name));
    if (format === 'json') {
      io.stdout.write(renderJson(networks));
      return 0;
    }
    io.stdout.write(
      renderTable(
        ['NETWORK ID', 'NAME', 'DRIVER', 'SCOPE', 'ENCRYPTED', 'VNI', 'SUBNET'],
        networks.map((n) => [
          shortId(n.Id),
          n.Name,
          n.Driver,
          n.Scope,
          yesNo(n.Encrypted),
          String(n.VNI),
          (n.IPAM?.Config ?? []).map((c) => c.Subnet).join(','),
        ]),
      ),
    );
    return 0;
  },
});

const inspect = command({
  synopsis: '[OPTIONS] NETWORK [NETWORK...]',
  summary: 'Display detailed information on one or more networks, as JSON',
  flags: {},
  args: { min: 1, max: UNLIMITED },
  async run({ flags, args, client, io }) {
    if (flags.format === 'table') throw new UsageError('network inspect prints JSON only');
    // Like docker: the networks found are printed, each one not found is reported, exit 1 if any was not.
    const found = [];
    let failed = false;
    for (const ref of args) {
      try {
        found.push(await client.inspectNetwork(ref));
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        reportError(io, err);
        failed = true;
        if (err.code === 'VEIL_ERR_API_UNREACHABLE') break;
      }
    }
    io.stdout.write(renderJson(found));
    return failed ? 1 : 0;
  },
});

const rm = command({
  synopsis: 'NETWORK [NETWORK...]',
  summary: 'Remove one or more networks',
  flags: {},
  args: { min: 1, max: UNLIMITED },
  async run({ args, client, io }) {
    let failed = false;
    for (const ref of args) {
      try {
        await client.removeNetwork(ref);
        io.stdout.write(`${ref}\n`);
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        reportError(io, err);
        failed = true;
        // The next one would fail the same way.
        if (err.code === 'VEIL_ERR_API_UNREACHABLE') break;
      }
    }
    return failed ? 1 : 0;
  },
});

const connect = command({
  synopsis: '[OPTIONS] NETWORK CONTAINER',
  summary: 'Connect a container to a network; prints its IPv4 address',
  flags: {
    ip: { kind: 'string', value: 'IP', help: 'IPv4 address (default: the next free one)' },
    alias: { kind: 'list', value: 'NAME', help: 'network-scoped alias for the container' },
    mac: { kind: 'string', value: 'MAC', help: 'MAC address (default: derived from the IP)' },
    netns: { kind: 'string', value: 'PATH', help: "the container's network namespace, e.g. /run/netns/c1" },
    pid: { kind: 'string', value: 'PID', help: "a process in the container's network namespace" },
    host: { kind: 'string', value: 'HOSTID', help: 'the host the container runs on (default: the gateway answering)' },
  },
  args: { min: 2, max: 2 },
  async run({ flags, args, format, client, io }) {
    const [network, container] = args as [string, string];
    if (flags.netns !== undefined && flags.pid !== undefined) throw new UsageError('give --netns or --pid, not both');
    if (flags.netns !== undefined && !isAbsolute(flags.netns))
      throw new UsageError(`--netns ${flags.netns}: give an absolute path`);
    if (flags.pid !== undefined && !/^[1-9][0-9]{0,9}$/.test(flags.pid))
      throw new UsageError(`--pid ${flags.pid}: expected a process id`);
    const body: ConnectRequest = { Container: container };
    if (flags.host !== undefined) body.Host = flags.host;
    if (flags.netns !== undefined) body.Sandbox = { Netns: flags.netns };
    if (flags.pid !== undefined) body.Sandbox = { Pid: Number(flags.pid) };
    const endpointConfig: NonNullable<ConnectRequest['EndpointConfig']> = {};
    if (flags.ip !== undefined) endpointConfig.IPAMConfig = { IPv4Address: flags.ip };
    if (flags.alias !== undefined) endpointConfig.Aliases = flags.alias;
    if (flags.mac !== undefined) endpointConfig.MacAddress = flags.mac;
    if (Object.keys(endpointConfig).length > 0) body.EndpointConfig = endpointConfig;
    const endpoint = await client.connect(network, body);
    warn(io, endpoint.Warning);
    // The bare address, ready for scripts (the API may give it in CIDR form).
    io.stdout.write(format === 'json' ? renderJson(endpoint) : `${endpoint.IPv4Address.split('/')[0]}\n`);
    return 0;
  },
});

const disconnect = command({
  synopsis: '[OPTIONS] NETWORK CONTAINER',
  summary: 'Disconnect a container from a network',
  flags: {
    force: { kind: 'boolean', short: 'f', help: 'remove the endpoint even if its container cannot be reached' },
  },
  args: { min: 2, max: 2 },
  async run({ flags, args, client }) {
    const [network, container] = args as [string, string];
    await client.disconnect(network, { Container: container, ...(flags.force ? { Force: true } : {}) });
    return 0;
  },
});

const keysCmd = command({
  synopsis: '[OPTIONS] NETWORK',
  summary: "Show an encrypted network's key epochs, their states and the next rotation (never key bytes)",
  flags: {},
  args: { min: 1, max: 1 },
  async run({ args, format, client, io }) {
    const view = (await client.request('GET', `/networks/${encodeURIComponent(args[0]!)}/keys`)).body as KeysView;
    if (format === 'json') {
      io.stdout.write(renderJson(view));
      return 0;
    }
    io.stdout.write(
      renderTable(
        ['EPOCH', 'STATE', 'PUBLISHED', 'ACTIVATED', 'MEMBERS', 'ACKED', `ON ${view.Host}`],
        view.Epochs.map((e) => [
          String(e.Epoch),
          e.State,
          e.PublishedAt,
          e.ActivatedAt ?? '-',
          e.Members.join(',') || '-',
          e.Acked.join(',') || '-',
          e.Problem ?? (e.OutboundHere ? 'in+out' : e.InstalledHere ? 'in' : '-'),
        ]),
      ),
    );
    io.stdout.write(
      `next rotation: ${view.NextRotation ?? 'when the schedule leader sees the network'} (every ${formatSeconds(view.IntervalSeconds)})\n`,
    );
    if (view.Waiting) io.stdout.write(`waiting: ${view.Waiting}\n`);
    return 0;
  },
});

const rotate = command({
  synopsis: 'NETWORK',
  summary: 'Force a key rotation of an encrypted network now (make-before-break)',
  flags: {},
  args: { min: 1, max: 1 },
  async run({ args, format, client, io }) {
    const r = (await client.request('POST', `/networks/${encodeURIComponent(args[0]!)}/rotate`)).body as {
      Id: string;
      AfterEpoch: number;
      RequestedAt: string;
    };
    io.stdout.write(
      format === 'json'
        ? renderJson(r)
        : `rotation requested: a new epoch after ${r.AfterEpoch} (veil network keys ${args[0]})\n`,
    );
    return 0;
  },
});

interface StatusView {
  Network: string;
  Host: string;
  Encrypted: boolean;
  Protected: boolean;
  Summary: string;
  LastRotation: string | null;
  NextRotation: string | null;
  Waiting: string | null;
  Peers: Array<{
    Host: string;
    Protected: boolean;
    Statement: string;
    Outbound: { SPI: string; Epoch: number; Sealed: number; SequenceHeadroom: number } | null;
    Inbound: Array<{ SPI: string; Epoch: number; Opened: number }>;
    Drops: Record<string, number>;
  }>;
  UnattributedDrops: Record<string, number>;
}

const statusCmd = command({
  synopsis: '[OPTIONS] NETWORK',
  summary:
    "Is this network's traffic encrypted? Per peer: SAs, epochs, packets sealed and opened, drops, sequence headroom",
  flags: {},
  args: { min: 1, max: 1 },
  async run({ args, format, client, io }) {
    const v = (await client.request('GET', `/networks/${encodeURIComponent(args[0]!)}/status`)).body as StatusView;
    if (format === 'json') {
      io.stdout.write(renderJson(v));
      return 0;
    }
    const drops = (d: Record<string, number>) =>
      Object.entries(d)
        .map(([k, n]) => `${k}=${n}`)
        .join(',') || '-';
    io.stdout.write(`${v.Network} on ${v.Host}: ${v.Summary}\n`);
    io.stdout.write(
      renderTable(
        ['PEER', 'PROTECTED', 'OUT SPI', 'EPOCH', 'SEALED', 'HEADROOM', 'IN SPI:EPOCH:OPENED', 'DROPS'],
        v.Peers.map((p) => [
          p.Host,
          yesNo(p.Protected),
          p.Outbound?.SPI ?? '-',
          p.Outbound ? String(p.Outbound.Epoch) : '-',
          p.Outbound ? String(p.Outbound.Sealed) : '-',
          p.Outbound ? String(p.Outbound.SequenceHeadroom) : '-',
          p.Inbound.map((i) => `${i.SPI}:${i.Epoch}:${i.Opened}`).join(' ') || '-',
          drops(p.Drops),
        ]),
      ),
    );
    for (const p of v.Peers) if (!p.Protected) io.stdout.write(`${p.Host}: ${p.Statement}\n`);
    if (v.Encrypted)
      io.stdout.write(`last rotation: ${v.LastRotation ?? '-'}   next rotation: ${v.NextRotation ?? '-'}\n`);
    if (v.Waiting) io.stdout.write(`waiting: ${v.Waiting}\n`);
    return 0;
  },
});

function formatSeconds(s: number): string {
  return s % 3600 === 0 ? `${s / 3600}h` : s % 60 === 0 ? `${s / 60}m` : `${s}s`;
}

const NETWORK_COMMANDS: Record<string, Command> = {
  create,
  ls,
  inspect,
  rm,
  connect,
  disconnect,
  keys: keysCmd,
  rotate,
  status: statusCmd,
};
/** Docker's aliases. */
const NETWORK_ALIASES: Record<string, string> = { list: 'ls', remove: 'rm' };

// ---- veil host ----

const hostLs = command({
  synopsis: '[OPTIONS]',
  summary: 'List the hosts registered with the control plane',
  flags: {},
  args: { min: 0, max: 0 },
  async run({ format, client, io }) {
    const hosts = (await client.listHosts()).sort((a, b) => a.Index - b.Index);
    for (const h of hosts) warn(io, h.Warning);
    if (format === 'json') {
      io.stdout.write(renderJson(hosts));
      return 0;
    }
    io.stdout.write(
      renderTable(
        ['HOST ID', 'INDEX', 'ADDRESS', 'OS', 'ARCH', 'VERSION'],
        hosts.map((h) => [h.Id, String(h.Index), h.Address, h.OS, h.Arch, h.Version]),
      ),
    );
    return 0;
  },
});

const HOST_COMMANDS: Record<string, Command> = { ls: hostLs };

// ---- veil cni ----

const cniConfig = command({
  synopsis: '[OPTIONS] NETWORK',
  summary: "Print (or write) a CNI configuration list for a veil network, asking this CLI's API (docs/cni.md)",
  flags: {
    write: { kind: 'string', value: 'DIR', help: 'write DIR/NETWORK.conflist instead of printing it' },
    'cni-version': {
      kind: 'string',
      value: 'V',
      help: `cniVersion of the list (${CNI_VERSIONS.join(', ')}; default 1.0.0)`,
    },
  },
  args: { min: 1, max: 1 },
  async run({ flags, args, client, io }) {
    const version = flags['cni-version'] ?? '1.0.0';
    if (!(CNI_VERSIONS as readonly string[]).includes(version))
      throw new UsageError(`--cni-version ${version}: expected one of ${CNI_VERSIONS.join(', ')}`);
    // The network must exist: a list for a typo would fail only when a container starts.
    const net = await client.inspectNetwork(args[0]!);
    const file = (flag: 'tls-ca' | 'tls-cert' | 'tls-key', env: string) => {
      const path = flags[flag] ?? (io.env[env] || undefined);
      return path === undefined ? undefined : resolve(path);
    };
    const tls = client.address.startsWith('https:')
      ? {
          ca: file('tls-ca', 'VEIL_TLS_CA'),
          cert: file('tls-cert', 'VEIL_TLS_CERT'),
          key: file('tls-key', 'VEIL_TLS_KEY'),
        }
      : undefined;
    const text = `${JSON.stringify(
      cniConfList(net.Name, { api: client.address, cniVersion: version as CniVersion, ...(tls ? { tls } : {}) }),
      null,
      2,
    )}\n`;
    if (flags.write === undefined) {
      io.stdout.write(text);
      return 0;
    }
    const path = join(flags.write, `${net.Name}.conflist`);
    try {
      writeFileSync(path, text, { mode: 0o644 });
    } catch (err) {
      throw new UsageError(`--write ${flags.write}: ${(err as Error).message}`);
    }
    io.stdout.write(`${path}\n`);
    return 0;
  },
});

const cniInstall = command({
  synopsis: 'DIR',
  summary: 'Install veil-cni, with the Node it runs on, into a CNI plugin directory (e.g. /opt/cni/bin)',
  flags: {},
  args: { min: 1, max: 1 },
  async run({ args, io }) {
    if (!isAbsolute(args[0]!)) throw new UsageError(`${args[0]}: give the plugin directory as an absolute path`);
    let launcher: string;
    try {
      launcher = installCni(args[0]!);
    } catch (err) {
      throw new UsageError(`cannot install into ${args[0]}: ${(err as Error).message}`);
    }
    io.stdout.write(`${launcher}\n`);
    return 0;
  },
});

const CNI_COMMANDS: Record<string, Command> = { config: cniConfig, install: cniInstall };
const HOST_ALIASES: Record<string, string> = { list: 'ls' };

// ---- dispatch ----

const GLOBAL_HELP = `global options (before or after the command):\n${describeFlags(GLOBAL_FLAGS, { withHelp: false })}`;

function groupUsage(group: string, commands: Record<string, Command>): string {
  const width = Math.max(...Object.keys(commands).map((n) => n.length));
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}   ${c.summary}`);
  return `usage: veil ${group} COMMAND\n\ncommands:\n${lines.join('\n')}\n\n${GLOBAL_HELP}\n\nRun 'veil ${group} COMMAND --help' for a command's options.\n`;
}

function commandUsage(group: string, name: string, c: Command): string {
  const own =
    Object.keys(c.flags).length > 0
      ? `options:\n${describeFlags(c.flags)}\n\n`
      : 'options:\n  -h, --help   print this help\n\n';
  return `usage: veil ${group} ${name} ${c.synopsis}\n\n${c.summary}\n\n${own}${GLOBAL_HELP}\n`;
}

async function runGroup(
  group: string,
  commands: Record<string, Command>,
  aliases: Record<string, string>,
  argv: string[],
  io: CliIo,
): Promise<number> {
  const usageError = (message: string, usage: string) => {
    io.stderr.write(`veil: ${message}\n\n${usage}`);
    return 2;
  };

  let leading;
  try {
    leading = parseArgs(argv, GLOBAL_FLAGS, { stopAtPositional: true });
  } catch (err) {
    if (err instanceof UsageError) return usageError(err.message, groupUsage(group, commands));
    throw err;
  }
  const [given, ...rest] = leading.positionals;
  if (given === undefined) {
    if (leading.help) {
      io.stdout.write(groupUsage(group, commands));
      return 0;
    }
    return usageError(`veil ${group} needs a command`, groupUsage(group, commands));
  }
  const name = aliases[given] ?? given;
  const cmd = Object.hasOwn(commands, name) ? commands[name]! : undefined;
  if (cmd === undefined) return usageError(`unknown command "${group} ${given}"`, groupUsage(group, commands));

  // A mistake gets the synopsis and a pointer to --help, as docker does, not the whole help.
  const usage = `usage: veil ${group} ${name} ${cmd.synopsis}\nRun 'veil ${group} ${name} --help' for the options.\n`;
  let ctx: Context<FlagSpecs>;
  try {
    // The leading global options are parsed again with the command's, so a flag given twice is caught.
    const parsed = parseArgs([...argv.slice(0, argv.length - leading.positionals.length), ...rest], {
      ...GLOBAL_FLAGS,
      ...cmd.flags,
    });
    if (parsed.help || leading.help) {
      io.stdout.write(commandUsage(group, name, cmd));
      return 0;
    }
    const flags = parsed.flags as ParsedFlags<FlagSpecs> & Globals;
    const args = parsed.positionals;
    if (args.length < cmd.args.min)
      throw new UsageError(
        `"veil ${group} ${name}" needs ${cmd.args.max === cmd.args.min ? 'exactly' : 'at least'} ${cmd.args.min} argument(s)`,
      );
    if (args.length > cmd.args.max)
      throw new UsageError(
        `"veil ${group} ${name}" takes ${cmd.args.max === 0 ? 'no' : `at most ${cmd.args.max}`} argument(s), got: ${args.join(' ')}`,
      );
    const format = flags.format ?? 'table';
    if (!isOutputFormat(format)) throw new UsageError(`--format ${format}: expected table or json`);
    ctx = { flags, args, format, client: new ApiClient(resolveClientOptions(flags, io.env)), io };
  } catch (err) {
    if (err instanceof UsageError) return usageError(err.message, usage);
    throw err;
  }

  try {
    return await cmd.run(ctx);
  } catch (err) {
    if (err instanceof UsageError) return usageError(err.message, usage);
    if (err instanceof ApiError) {
      reportError(io, err);
      return 1;
    }
    throw err;
  }
}

/** `veil network ...`: argv is what follows `network` (global options may precede it, see splitGlobalOptions). */
export function runNetwork(argv: string[], io: CliIo): Promise<number> {
  return runGroup('network', NETWORK_COMMANDS, NETWORK_ALIASES, argv, io);
}

/** `veil cni ...`: argv is what follows `cni`. */
export function runCniCommand(argv: string[], io: CliIo): Promise<number> {
  return runGroup('cni', CNI_COMMANDS, {}, argv, io);
}

/** `veil host ...`: argv is what follows `host`. */
export function runHost(argv: string[], io: CliIo): Promise<number> {
  return runGroup('host', HOST_COMMANDS, HOST_ALIASES, argv, io);
}

/**
 * For veil.ts: the command group after any leading global options (`veil --api X network ls`
 * → group "network", argv ["--api", "X", "ls"]). group is undefined when there is none or the
 * leading options do not parse (the caller's usage message handles that).
 */
export function splitGlobalOptions(argv: string[]): { group: string | undefined; argv: string[] } {
  try {
    const { positionals } = parseArgs(argv, GLOBAL_FLAGS, { stopAtPositional: true });
    const [group, ...rest] = positionals;
    return { group, argv: [...argv.slice(0, argv.length - positionals.length), ...rest] };
  } catch (err) {
    if (err instanceof UsageError) return { group: undefined, argv };
    throw err;
  }
}
