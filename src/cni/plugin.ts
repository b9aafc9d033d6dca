import {
  ApiError,
  resolveClientOptions,
  type ConnectRequest,
  type EndpointView,
  type NetworkDetail,
} from '../cli/client.js';
import { RESOLVER_ADDRESS } from '../model/resolver.js';
import type { InterfaceState } from '../host/netns.js';
import { isIpv4 } from '../model/ipv4.js';
import {
  CHECK_SINCE,
  CNI_ERR,
  CNI_LATEST,
  CNI_VERSIONS,
  KNOWN_ARGS,
  type CniCommand,
  type CniEnvironment,
  type CniError,
  type CniResult,
  type CniVersion,
  type VeilNetConf,
} from './spec.js';

/*
 * One CNI invocation (docs/cni.md): the environment and stdin in, what to print and the exit code
 * out. The gateway does the work over its API, exactly as for `veil network connect`: ADD connects
 * the container's namespace with the runtime's interface name and container id, DEL disconnects by
 * that id, CHECK compares the record and the interface with prevResult.
 */

/** What the plugin needs from the gateway's API. */
export interface CniApi {
  inspectNetwork(idOrName: string): Promise<NetworkDetail>;
  connect(network: string, body: ConnectRequest): Promise<{ IPv4Address: string; MacAddress: string }>;
  disconnect(network: string, body: ConnectRequest | Record<string, unknown>): Promise<void>;
}

/** The plugin's seams: the API client, and what it looks at in the container's namespace. */
export interface CniIo {
  client(options: ReturnType<typeof resolveClientOptions>): CniApi;
  netnsExists(path: string): boolean;
  interfaceNamed(netns: string, ifName: string): Promise<InterfaceState | undefined>;
}

export interface CniOutcome {
  stdout: string;
  exitCode: number;
  /** For the runtime's log: what happened that the answer does not say. */
  stderr?: string;
}

/** A failure with its CNI code; the message says what to do. */
export class CniFailure extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details?: string,
  ) {
    super(message);
  }
}

const fail = (code: number, msg: string, details?: string): never => {
  throw new CniFailure(code, msg, details);
};

/** CNI SPEC "Parameters": the container id is alphanumeric plus underscore, period and hyphen. */
const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$/;
/** veil names interfaces as the store accepts them (docs/etcd.md "Endpoints"). */
const IFNAME_RE = /^[a-z][a-z0-9]{0,14}$/;
const MAC_RE = /^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function parseEnvironment(env: Readonly<Record<string, string | undefined>>): CniEnvironment {
  const command = env.CNI_COMMAND ?? '';
  if (!['ADD', 'DEL', 'CHECK', 'VERSION'].includes(command))
    fail(CNI_ERR.INVALID_ENVIRONMENT, `CNI_COMMAND "${command}": veil-cni does ADD, DEL, CHECK and VERSION`);
  const args = new Map<string, string>();
  for (const pair of (env.CNI_ARGS ?? '').split(';').filter((p) => p !== '')) {
    const eq = pair.indexOf('=');
    if (eq <= 0) fail(CNI_ERR.INVALID_ENVIRONMENT, `CNI_ARGS: "${pair}" is not KEY=VALUE`);
    args.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  const parsed: CniEnvironment = {
    command: command as CniCommand,
    containerId: env.CNI_CONTAINERID ?? '',
    netns: env.CNI_NETNS ?? '',
    ifName: env.CNI_IFNAME ?? '',
    args,
  };
  if (parsed.command === 'VERSION') return parsed;
  if (!CONTAINER_ID_RE.test(parsed.containerId))
    fail(CNI_ERR.INVALID_ENVIRONMENT, 'CNI_CONTAINERID must be letters, digits, "_", "." or "-"');
  if (!IFNAME_RE.test(parsed.ifName))
    fail(CNI_ERR.INVALID_ENVIRONMENT, `CNI_IFNAME "${parsed.ifName}": veil takes 1..15 lower-case letters and digits`);
  if (parsed.command !== 'DEL' && !parsed.netns.startsWith('/'))
    fail(CNI_ERR.INVALID_ENVIRONMENT, 'CNI_NETNS must be the path of the container network namespace');
  const ignoreUnknown = ['1', 'true'].includes((args.get('IgnoreUnknown') ?? '').toLowerCase());
  const unknown = [...args.keys()].filter((k) => !(KNOWN_ARGS as readonly string[]).includes(k));
  if (unknown.length > 0 && !ignoreUnknown)
    fail(CNI_ERR.UNSUPPORTED_FIELD, `CNI_ARGS ${unknown.join(', ')}: unknown to veil (add IgnoreUnknown=1)`);
  return parsed;
}

export function parseNetConf(stdin: string): VeilNetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (err) {
    return fail(CNI_ERR.DECODE_FAILURE, `the network configuration is not JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    fail(CNI_ERR.DECODE_FAILURE, 'the network configuration must be a JSON object');
  const c = raw as Record<string, unknown>;
  const version = c.cniVersion;
  if (typeof version !== 'string' || !(CNI_VERSIONS as readonly string[]).includes(version))
    fail(
      CNI_ERR.INCOMPATIBLE_VERSION,
      `cniVersion ${JSON.stringify(version)}: veil-cni speaks ${CNI_VERSIONS.join(', ')}`,
    );
  const str = (key: string, value: unknown, re?: RegExp): string | undefined => {
    if (value === undefined) return undefined;
    if (typeof value !== 'string' || value === '' || (re && !re.test(value)))
      fail(CNI_ERR.INVALID_CONFIG, `"${key}": ${JSON.stringify(value)} is not a valid value`);
    return value as string;
  };
  const name = str('name', c.name, NAME_RE) ?? fail(CNI_ERR.INVALID_CONFIG, '"name" is required');
  const type = str('type', c.type) ?? fail(CNI_ERR.INVALID_CONFIG, '"type" is required');
  const network = str('network', c.network, NAME_RE) ?? name;
  const conf: VeilNetConf = { cniVersion: version as CniVersion, name, type, network };
  const api = str('api', c.api);
  if (api) conf.api = api;
  if (c.tls !== undefined) {
    const t = c.tls as Record<string, unknown>;
    if (typeof t !== 'object' || t === null) fail(CNI_ERR.INVALID_CONFIG, '"tls" must be {ca, cert, key}');
    conf.tls = {};
    for (const k of ['ca', 'cert', 'key'] as const) {
      const v = str(`tls.${k}`, t[k]);
      if (v) conf.tls[k] = v;
    }
  }
  if (c.runtimeConfig !== undefined) conf.runtimeConfig = c.runtimeConfig as VeilNetConf['runtimeConfig'];
  if (c.args !== undefined) conf.args = c.args as VeilNetConf['args'];
  if (c.prevResult !== undefined) conf.prevResult = c.prevResult as CniResult;
  return conf;
}

/** What the runtime asks for this container: an address, a MAC, aliases, its name (docs/cni.md "Arguments"). */
/** A list of strings from the runtime, or a configuration error naming the key. */
function stringList(value: unknown, key: string): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string'))
    fail(CNI_ERR.INVALID_CONFIG, `"${key}" must be a list of strings`);
  return value as string[];
}

function oneString(value: unknown, key: string): string | undefined {
  if (value !== undefined && typeof value !== 'string') fail(CNI_ERR.INVALID_CONFIG, `"${key}" must be a string`);
  return value as string | undefined;
}

export function requested(env: CniEnvironment, conf: VeilNetConf) {
  const rc = (conf.runtimeConfig ?? {}) as Record<string, unknown>;
  const args = ((conf.args as Record<string, unknown> | undefined)?.cni ?? {}) as Record<string, unknown>;
  const aliasMap = rc.aliases;
  if (aliasMap !== undefined && (typeof aliasMap !== 'object' || aliasMap === null || Array.isArray(aliasMap)))
    fail(CNI_ERR.INVALID_CONFIG, '"runtimeConfig.aliases" must map network names to lists of names');
  const ipText =
    stringList(rc.ips, 'runtimeConfig.ips')?.[0] ?? stringList(args.ips, 'args.cni.ips')?.[0] ?? env.args.get('IP');
  const ip = ipText?.split('/')[0];
  if (ip !== undefined && !isIpv4(ip)) fail(CNI_ERR.INVALID_CONFIG, `requested IP "${ipText}" is not an IPv4 address`);
  const mac = oneString(rc.mac, 'runtimeConfig.mac') ?? oneString(args.mac, 'args.cni.mac') ?? env.args.get('MAC');
  if (mac !== undefined && !MAC_RE.test(mac)) fail(CNI_ERR.INVALID_CONFIG, `requested MAC "${mac}" is not a MAC`);
  const pod = env.args.get('K8S_POD_NAME');
  const namespace = env.args.get('K8S_POD_NAMESPACE');
  // The container's name for DNS: the pod's (podman puts the container name there), else the id.
  const name = pod && NAME_RE.test(pod) ? pod : env.containerId.slice(0, 12);
  const aliases = [
    ...(stringList((aliasMap as Record<string, unknown> | undefined)?.[conf.name], 'runtimeConfig.aliases') ?? []),
  ];
  if (pod && namespace && NAME_RE.test(`${pod}.${namespace}`)) aliases.push(`${pod}.${namespace}`);
  return { ip, mac: mac?.toLowerCase(), name, aliases: [...new Set(aliases.filter((a) => a !== name))] };
}

function result(
  version: CniVersion,
  env: CniEnvironment,
  net: NetworkDetail,
  ep: { IPv4Address: string; MacAddress: string },
): CniResult {
  const legacy = version !== '1.0.0';
  return {
    cniVersion: version,
    interfaces: [{ name: env.ifName, mac: ep.MacAddress, sandbox: env.netns }],
    ips: [
      {
        ...(legacy ? { version: '4' as const } : {}),
        address: ep.IPv4Address,
        gateway: net.IPAM.Config[0]!.Gateway!,
        interface: 0,
      },
    ],
    // No routes: no default route (docs/cni.md "Results"), and the resolver's is a link route the
    // gateway adds itself, which a result's route (via the gateway when it has no "gw") would misstate.
    dns: { nameservers: [RESOLVER_ADDRESS], search: [net.Name.toLowerCase()] },
  };
}

/** veil's API answers, as CNI errors that say what to do. */
function fromApi(err: unknown, conf: VeilNetConf): never {
  if (err instanceof CniFailure) throw err;
  if (!(err instanceof ApiError)) throw err;
  switch (err.code) {
    case 'VEIL_ERR_STORE_UNAVAILABLE':
      return fail(CNI_ERR.TRY_AGAIN_LATER, `veil's store (etcd) does not answer: try again`, err.message);
    case 'VEIL_ERR_API_UNREACHABLE':
      return fail(
        CNI_ERR.TRY_AGAIN_LATER,
        `no veil gateway answers: start it on this host, or set "api" in the network configuration`,
        err.message,
      );
    case 'VEIL_ERR_NOT_FOUND':
      return fail(
        CNI_ERR.INVALID_CONFIG,
        `veil has no network ${conf.network}: create it (veil network create) or fix "network" in the configuration`,
        err.message,
      );
    case 'VEIL_ERR_IP_TAKEN':
      return fail(CNI_ERR.ADDRESS_TAKEN, `the requested address is taken on ${conf.network}`, err.message);
    case 'VEIL_ERR_IPAM_EXHAUSTED':
      return fail(CNI_ERR.POOL_EXHAUSTED, `no free address left on ${conf.network}`, err.message);
    case 'VEIL_ERR_ENDPOINT_EXISTS':
      return fail(CNI_ERR.INTERFACE_EXISTS, `the container already has this interface on veil`, err.message);
    case 'VEIL_ERR_REQUEST_INVALID':
      return fail(CNI_ERR.INVALID_CONFIG, err.message);
    default:
      return fail(CNI_ERR.VEIL_REFUSED, err.message);
  }
}

function findEndpoint(net: NetworkDetail, env: CniEnvironment): EndpointView | undefined {
  return Object.values(net.Containers ?? {}).find(
    (e) => e.Runtime?.ContainerID === env.containerId && e.Runtime.IfName === env.ifName,
  );
}

async function add(env: CniEnvironment, conf: VeilNetConf, io: CniIo, api: CniApi): Promise<CniResult> {
  if (!io.netnsExists(env.netns)) fail(CNI_ERR.UNKNOWN_CONTAINER, `no network namespace at ${env.netns}`);
  if (await io.interfaceNamed(env.netns, env.ifName))
    fail(CNI_ERR.INTERFACE_EXISTS, `${env.netns} already has an interface ${env.ifName} (CNI ADD makes it)`);
  const want = requested(env, conf);
  const net = await api.inspectNetwork(conf.network).catch((err: unknown) => fromApi(err, conf));
  const runtime = { Kind: 'cni' as const, ContainerID: env.containerId };
  // The interface is not there, so a record of it is stale (a node rebooted, a runtime killed before
  // its DEL): it goes first, with the address it holds, which the runtime may be asking for again.
  await api.disconnect(net.Name, { Runtime: runtime, IfName: env.ifName }).catch((err: unknown) => {
    if (!(err instanceof ApiError && err.code === 'VEIL_ERR_ENDPOINT_NOT_FOUND')) fromApi(err, conf);
  });
  const ep = await api
    .connect(net.Name, {
      Container: want.name,
      Sandbox: { Netns: env.netns },
      IfName: env.ifName,
      Runtime: runtime,
      EndpointConfig: {
        ...(want.ip ? { IPAMConfig: { IPv4Address: want.ip } } : {}),
        ...(want.mac ? { MacAddress: want.mac } : {}),
        Aliases: want.aliases,
      },
    })
    .catch(async (err: unknown) => {
      // No answer is not a refusal: the gateway may have connected it after all. Nothing stays behind.
      if (err instanceof ApiError && err.code === 'VEIL_ERR_API_UNREACHABLE')
        await api.disconnect(net.Name, { Runtime: runtime, IfName: env.ifName }).catch(() => undefined);
      return fromApi(err, conf);
    });
  return result(conf.cniVersion, env, net, ep);
}

async function del(env: CniEnvironment, conf: VeilNetConf, api: CniApi): Promise<string | undefined> {
  // CNI SPEC "DEL": success when what it would remove is already gone.
  let note: string | undefined;
  await api
    .disconnect(conf.network, { Runtime: { Kind: 'cni', ContainerID: env.containerId }, IfName: env.ifName })
    .catch((err: unknown) => {
      if (err instanceof ApiError && (err.code === 'VEIL_ERR_ENDPOINT_NOT_FOUND' || err.code === 'VEIL_ERR_NOT_FOUND'))
        return;
      // A gateway that is down must not keep a runtime retrying DEL (pods stuck terminating): the
      // gateway removes the record itself once the namespace is gone (docs/cni.md "Cleanup").
      if (err instanceof ApiError && err.code === 'VEIL_ERR_API_UNREACHABLE') {
        note = `veil-cni: DEL: ${err.message}; the gateway removes the endpoint once the namespace is gone\n`;
        return;
      }
      fromApi(err, conf);
    });
  return note;
}

async function check(env: CniEnvironment, conf: VeilNetConf, io: CniIo, api: CniApi): Promise<void> {
  if (!CHECK_SINCE.includes(conf.cniVersion))
    fail(CNI_ERR.INCOMPATIBLE_VERSION, `CHECK needs cniVersion 0.4.0 or later (this is ${conf.cniVersion})`);
  const prev = conf.prevResult;
  const prevIp = prev?.ips?.[0]?.address;
  const prevIf = prev?.interfaces?.find((i) => i.name === env.ifName);
  if (typeof prevIp !== 'string' || typeof prevIf?.mac !== 'string')
    fail(CNI_ERR.INVALID_CONFIG, `CHECK needs the prevResult ADD printed (its ${env.ifName})`);
  const net = await api.inspectNetwork(conf.network).catch((err: unknown) => fromApi(err, conf));
  const ep = findEndpoint(net, env);
  if (!ep)
    fail(
      CNI_ERR.DRIFTED,
      `veil has no endpoint for container ${env.containerId} (${env.ifName}) on ${net.Name}: DEL and ADD it again`,
    );
  if (ep!.IPv4Address !== prevIp)
    fail(CNI_ERR.DRIFTED, `veil's record has ${ep!.IPv4Address} for ${env.ifName}, prevResult ${prevIp}`);
  if (ep!.MacAddress.toLowerCase() !== prevIf!.mac.toLowerCase())
    fail(CNI_ERR.DRIFTED, `veil's record has MAC ${ep!.MacAddress} for ${env.ifName}, prevResult ${prevIf!.mac}`);
  if (!io.netnsExists(env.netns)) fail(CNI_ERR.DRIFTED, `the container's namespace ${env.netns} is gone`);
  const inside = await io.interfaceNamed(env.netns, env.ifName);
  if (!inside) fail(CNI_ERR.DRIFTED, `the container has no interface ${env.ifName}`);
  if (inside!.mac !== prevIf!.mac.toLowerCase())
    fail(CNI_ERR.DRIFTED, `${env.ifName} has MAC ${inside!.mac} in the container, prevResult ${prevIf!.mac}`);
  if (!inside!.ipv4.includes(prevIp!))
    fail(
      CNI_ERR.DRIFTED,
      `${env.ifName} does not have ${prevIp} in the container (it has ${inside!.ipv4.join(', ') || 'none'})`,
    );
}

/** Runs one invocation; never throws. */
export async function runCni(
  environment: Readonly<Record<string, string | undefined>>,
  stdin: string,
  io: CniIo,
): Promise<CniOutcome> {
  // Errors are told in the version asked, also those found before the configuration is read.
  const asked = (() => {
    try {
      return (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    } catch {
      return undefined;
    }
  })();
  let version: string =
    typeof asked === 'string' && (CNI_VERSIONS as readonly string[]).includes(asked) ? asked : CNI_LATEST;
  try {
    let env: CniEnvironment;
    try {
      env = parseEnvironment(environment);
    } catch (err) {
      // A DEL that ADD would have refused the same way has nothing to remove (CNI SPEC "DEL").
      if (environment.CNI_COMMAND === 'DEL' && err instanceof CniFailure)
        return { stdout: '', exitCode: 0, stderr: `veil-cni: DEL: nothing to remove: ${err.message}\n` };
      throw err;
    }
    if (env.command === 'VERSION') return print({ cniVersion: version, supportedVersions: [...CNI_VERSIONS] }, 0);
    const conf = parseNetConf(stdin);
    version = conf.cniVersion;
    let options;
    try {
      options = resolveClientOptions(
        {
          ...(conf.api ? { api: conf.api } : {}),
          ...(conf.tls?.ca ? { 'tls-ca': conf.tls.ca } : {}),
          ...(conf.tls?.cert ? { 'tls-cert': conf.tls.cert } : {}),
          ...(conf.tls?.key ? { 'tls-key': conf.tls.key } : {}),
        },
        {},
      );
    } catch (err) {
      return fail(CNI_ERR.INVALID_CONFIG, (err as Error).message.replace(/--(tls-[a-z]+|api)/g, '"$1"'));
    }
    const api = io.client(options);
    switch (env.command) {
      case 'ADD':
        return print(await add(env, conf, io, api), 0);
      case 'DEL': {
        const note = await del(env, conf, api);
        return { stdout: '', exitCode: 0, ...(note ? { stderr: note } : {}) };
      }
      case 'CHECK':
        await check(env, conf, io, api);
        return { stdout: '', exitCode: 0 };
    }
  } catch (err) {
    const failure =
      err instanceof CniFailure ? err : new CniFailure(CNI_ERR.IO_FAILURE, `veil-cni: ${(err as Error).message}`);
    const body: CniError = {
      cniVersion: version,
      code: failure.code,
      msg: failure.message,
      ...(failure.details ? { details: failure.details } : {}),
    };
    return print(body, 1);
  }
}

function print(value: unknown, exitCode: number): CniOutcome {
  return { stdout: `${JSON.stringify(value)}\n`, exitCode };
}
