import { networkInterfaces } from 'node:os';
import { VeilError } from '../errors.js';
import { DEFAULT_PEER_NET, inPeerNet, PEER_NET_PREFIX_LENGTH, PEER_NETS, peerNetRefusal } from '../model/peer-net.js';
import { DEFAULT_PLAIN_PATH, isPlainPath, PLAIN_PATHS, type PlainPath } from '../model/plain-path.js';
import { DEFAULT_VTEP, isVtepKind, VTEP_KINDS, type VtepKind } from '../model/vtep.js';

/*
 * `veil gateway` in cluster mode, configured like Docker's daemon: flags, each
 * with an environment variable, every default in this one place.
 *
 *   --cluster-store etcd://H:P[,H:P]   VEIL_CLUSTER_STORE    etcd endpoints; absent: an embedded etcd on loopback (one host)
 *   --cluster-store-opt kv.K=FILE      VEIL_CLUSTER_STORE_OPT etcd client TLS (Docker's keys): kv.cacertfile, kv.certfile, kv.keyfile;
 *                                                            repeat the flag, or comma-separate in the variable
 *   --cluster-advertise IP|IFACE       VEIL_CLUSTER_ADVERTISE underlay address peers send ESP-in-UDP to
 *   --host-id ID                       VEIL_HOST_ID          default: the hostname
 *   --data-dir DIR                     VEIL_DATA_DIR         identity key (0600) lives here
 *   --api-socket PATH                  VEIL_API_SOCKET       unix socket of the API
 *   --api-listen HOST:PORT             VEIL_API_LISTEN       also TCP; not loopback → TLS required
 *   --tlscacert/--tlscert/--tlskey     VEIL_TLS_CA/CERT/KEY  the API's TLS (clients need certificates to change anything)
 *   --vtep-netns NAME                  VEIL_VTEP_NETNS       the namespace holding bridges and VXLAN devices
 *   --link-net A.B.C.0                 VEIL_LINK_NET         /30 between host and vtep namespace
 *   --peer-net A.B.C.0                 VEIL_PEER_NET         /18 of the peers' gateway addresses
 *   --mtu N                            VEIL_MTU              underlay MTU (overlay MTUs derive from it); absent: the
 *                                                            MTU of the interface holding the advertised address
 *   --data-path native|ts              VEIL_DATA_PATH
 *   --plain-path kernel|gateway        VEIL_PLAIN_PATH       how plain networks reach the underlay (kernel)
 *   --vtep tap|kernel                  VEIL_VTEP             where encrypted networks' frames meet the data path (tap)
 *   --lease-ttl SECONDS                VEIL_LEASE_TTL        how long a dead host stays listed
 *   --key-interval DURATION            VEIL_KEY_INTERVAL     rotation interval (12h; "30s" for tests)
 *   --key-grace DURATION               VEIL_KEY_GRACE        old epoch kept installed, acks awaited (60s)
 *   --sequence-budget N                VEIL_SEQUENCE_BUDGET  packets per outbound SA; rotation asked at half (2^48)
 *   --os NAME                          VEIL_OS               the OS this host reports (default: this one's)
 *   --docker-plugins DIR               VEIL_DOCKER_PLUGINS   serve the Docker plugin "veil" as DIR/veil.sock (off when absent)
 *   --docker-host unix://PATH          VEIL_DOCKER_HOST      the Docker daemon the plugin asks for network names
 *   --cni-sweep DURATION               VEIL_CNI_SWEEP        how often endpoints CNI runtimes left without DEL are looked for (30s)
 */

export interface ClusterGatewayConfig {
  /** Absent: the gateway runs an embedded etcd (src/store/embedded-etcd.ts) under <dataDir>/etcd. */
  clusterStore?: string[];
  /** PEM files for the etcd client's TLS (--cluster-store-opt kv.*). */
  clusterStoreTls?: { ca?: string; cert?: string; key?: string };
  advertise: string;
  hostId: string;
  dataDir: string;
  apiSocket: string;
  apiListen?: string;
  apiTls?: { cert: string; key: string; ca: string };
  vtepNetns: string;
  linkNet: string;
  peerNet: string;
  /** --mtu; absent: the MTU of the interface that holds `advertise` (src/main.ts underlayMtuFor). */
  underlayMtu?: number;
  dataPath?: 'native' | 'ts';
  plainPath: PlainPath;
  /** Where encrypted networks' frames meet the data path (src/model/vtep.ts). */
  vtep: VtepKind;
  leaseTtlSeconds: number;
  keyIntervalMs: number;
  keyGraceMs: number;
  sequenceBudget?: number;
  os: string;
  /** The Docker plugin (docs/docker.md): its socket's directory and the daemon's API socket. */
  docker?: { pluginsDir: string; engineSocket: string };
  /** docs/cni.md "Cleanup"; absent: RUNTIME_SWEEP_MS. */
  cniSweepMs?: number;
}

/** The underlay MTUs veil takes (--mtu, or an interface's, clamped into this range). */
export const MTU_MIN = 1280;
export const MTU_MAX = 9000;

export const DEFAULTS = {
  dataDir: '/var/lib/veil',
  apiSocket: '/run/veil/veil.sock',
  vtepNetns: 'veil-vtep',
  linkNet: '169.254.47.0',
  peerNet: DEFAULT_PEER_NET,
  underlayMtu: 1500,
  plainPath: DEFAULT_PLAIN_PATH,
  vtep: DEFAULT_VTEP,
  leaseTtlSeconds: 15,
  keyIntervalMs: 12 * 3600_000,
  keyGraceMs: 60_000,
  dockerHost: 'unix:///var/run/docker.sock',
} as const;

interface Flag {
  name: string;
  env: string;
  help: string;
  /** May be given more than once; the values are joined with "\n" (the variable's with commas). */
  repeatable?: boolean;
}

export const GATEWAY_FLAGS: Flag[] = [
  {
    name: 'cluster-store',
    env: 'VEIL_CLUSTER_STORE',
    help: 'etcd://HOST:PORT[,HOST:PORT] (default: an embedded etcd on 127.0.0.1, one host only)',
  },
  {
    name: 'cluster-store-opt',
    env: 'VEIL_CLUSTER_STORE_OPT',
    help: 'etcd client TLS: kv.cacertfile=F, kv.certfile=F, kv.keyfile=F (repeat the flag)',
    repeatable: true,
  },
  {
    name: 'cluster-advertise',
    env: 'VEIL_CLUSTER_ADVERTISE',
    help: "this host's underlay IPv4 address or interface (required)",
  },
  { name: 'host-id', env: 'VEIL_HOST_ID', help: 'host id (default: the hostname)' },
  { name: 'data-dir', env: 'VEIL_DATA_DIR', help: `identity key directory (default ${DEFAULTS.dataDir})` },
  { name: 'api-socket', env: 'VEIL_API_SOCKET', help: `API unix socket (default ${DEFAULTS.apiSocket})` },
  { name: 'api-listen', env: 'VEIL_API_LISTEN', help: 'also serve the API on HOST:PORT (non-loopback needs --tls*)' },
  { name: 'tlscacert', env: 'VEIL_TLS_CA', help: 'CA that signs API clients (veil ca init)' },
  { name: 'tlscert', env: 'VEIL_TLS_CERT', help: 'API server certificate (veil ca issue --server)' },
  { name: 'tlskey', env: 'VEIL_TLS_KEY', help: 'API server key' },
  {
    name: 'vtep-netns',
    env: 'VEIL_VTEP_NETNS',
    help: `namespace of bridges and VXLAN devices (default ${DEFAULTS.vtepNetns})`,
  },
  { name: 'link-net', env: 'VEIL_LINK_NET', help: `host-vtep /30 (default ${DEFAULTS.linkNet})` },
  {
    name: 'peer-net',
    env: 'VEIL_PEER_NET',
    help: `the peers' gateway addresses, a /18: ${PEER_NETS.join(' or ')} (default ${DEFAULTS.peerNet})`,
  },
  {
    name: 'mtu',
    env: 'VEIL_MTU',
    help: `underlay MTU (default: the advertised address's interface's, else ${DEFAULTS.underlayMtu})`,
  },
  { name: 'data-path', env: 'VEIL_DATA_PATH', help: 'native | ts (default: native when built)' },
  {
    name: 'plain-path',
    env: 'VEIL_PLAIN_PATH',
    help: `how plain networks reach the underlay: ${PLAIN_PATHS.join(' | ')} (default ${DEFAULTS.plainPath})`,
  },
  {
    name: 'vtep',
    env: 'VEIL_VTEP',
    help: `where encrypted networks' frames meet the data path: ${VTEP_KINDS.join(' | ')} (default ${DEFAULTS.vtep})`,
  },
  { name: 'lease-ttl', env: 'VEIL_LEASE_TTL', help: `seconds (default ${DEFAULTS.leaseTtlSeconds})` },
  { name: 'key-interval', env: 'VEIL_KEY_INTERVAL', help: 'key rotation interval, e.g. 12h, 30m, 20s (default 12h)' },
  {
    name: 'key-grace',
    env: 'VEIL_KEY_GRACE',
    help: 'how long a replaced epoch stays installed and acks are awaited (default 60s)',
  },
  {
    name: 'sequence-budget',
    env: 'VEIL_SEQUENCE_BUDGET',
    help: 'packets one outbound SA may seal; a rotation is asked at half (default 2^48)',
  },
  { name: 'os', env: 'VEIL_OS', help: "OS to report (default: this host's)" },
  {
    name: 'docker-plugins',
    env: 'VEIL_DOCKER_PLUGINS',
    help: 'serve the Docker network and IPAM plugin "veil" as DIR/veil.sock, e.g. /run/docker/plugins',
  },
  {
    name: 'docker-host',
    env: 'VEIL_DOCKER_HOST',
    help: `the Docker daemon's API, for network names (default ${DEFAULTS.dockerHost})`,
  },
  {
    name: 'cni-sweep',
    env: 'VEIL_CNI_SWEEP',
    help: 'how often endpoints CNI runtimes left without DEL are looked for (default 30s)',
  },
];

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

function bad(what: string): never {
  throw new VeilError('VEIL_ERR_CONFIG_INVALID', what);
}

/** `--name value`, `--name=value`, then the environment. Unknown flags are refused. */
export function readFlags(argv: readonly string[], env: NodeJS.ProcessEnv, flags: Flag[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const f of flags) {
    const v = env[f.env];
    if (v !== undefined && v !== '') out.set(f.name, f.repeatable ? v.split(',').join('\n') : v);
  }
  const fromArgv = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) bad(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    if (!flags.some((f) => f.name === name)) bad(`unknown flag --${name}`);
    const value = eq < 0 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined || value === '') bad(`--${name} needs a value`);
    // A repeatable flag accumulates; the command line replaces the environment's value.
    const repeatable = flags.find((f) => f.name === name)!.repeatable === true;
    out.set(name, repeatable && fromArgv.has(name) ? `${out.get(name)!}\n${value}` : value);
    fromArgv.add(name);
  }
  return out;
}

/** A sweep period: at most a day (timers cannot wait longer than 2^31 ms anyway). */
function sweepPeriod(text: string): number {
  const ms = parseDuration(text);
  if (ms > 86_400_000) bad(`--cni-sweep ${text}: at most 24h`);
  return ms;
}

export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text);
  if (!m) bad(`duration "${text}" must look like 500ms, 20s, 30m or 12h`);
  const ms = Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  if (ms < 1000) bad(`duration "${text}" is below one second`);
  return ms;
}

/** etcd://h:p,h:p (or http://) → gRPC endpoints the etcd3 client takes. */
export function parseClusterStore(text: string): string[] {
  const m = /^(etcd|http):\/\/(.+)$/.exec(text);
  if (!m) bad(`--cluster-store "${text}" must look like etcd://HOST:PORT[,HOST:PORT]`);
  return m[2]!.split(',').map((hp) => {
    if (!/^[A-Za-z0-9.-]+:\d{1,5}$/.test(hp)) bad(`--cluster-store member "${hp}" must be HOST:PORT`);
    return `http://${hp}`;
  });
}

const STORE_OPT_KEYS = { 'kv.cacertfile': 'ca', 'kv.certfile': 'cert', 'kv.keyfile': 'key' } as const;

/** --cluster-store-opt values (Docker's kv.* names) → the etcd client's TLS files. */
export function parseClusterStoreOpts(values: readonly string[]): { ca?: string; cert?: string; key?: string } {
  const tls: { ca?: string; cert?: string; key?: string } = {};
  for (const v of values) {
    const eq = v.indexOf('=');
    const key = eq < 0 ? v : v.slice(0, eq);
    if (!(key in STORE_OPT_KEYS))
      bad(`--cluster-store-opt "${v}": known options are ${Object.keys(STORE_OPT_KEYS).join(', ')}`);
    const file = v.slice(eq + 1);
    if (eq < 0 || file === '') bad(`--cluster-store-opt ${key} needs a file: ${key}=PATH`);
    tls[STORE_OPT_KEYS[key as keyof typeof STORE_OPT_KEYS]] = file;
  }
  if ((tls.cert === undefined) !== (tls.key === undefined))
    bad('--cluster-store-opt kv.certfile and kv.keyfile go together');
  return tls;
}

/** An IPv4 address, or an interface name whose first IPv4 address is used (Docker's --cluster-advertise). */
export function resolveAdvertise(text: string): string {
  if (IPV4_RE.test(text)) return text;
  const ifc = networkInterfaces()[text]?.find((a) => a.family === 'IPv4');
  if (!ifc) bad(`--cluster-advertise "${text}" is neither an IPv4 address nor an interface with one`);
  return ifc.address;
}

function int(text: string, name: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) bad(`--${name} must be an integer in ${min}..${max}`);
  return n;
}

export function parseGatewayConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  hostname: string,
): ClusterGatewayConfig {
  const f = readFlags(argv, env, GATEWAY_FLAGS);
  const store = f.get('cluster-store');
  const storeTls = f.has('cluster-store-opt')
    ? parseClusterStoreOpts(f.get('cluster-store-opt')!.split('\n'))
    : undefined;
  if (storeTls && !store)
    bad('--cluster-store-opt configures the client of --cluster-store; the embedded etcd is loopback-only and plain');
  const advertise = f.get('cluster-advertise');
  if (!advertise) bad('--cluster-advertise is required');
  const dataPath = f.get('data-path');
  if (dataPath !== undefined && dataPath !== 'native' && dataPath !== 'ts') bad('--data-path must be native or ts');
  const plainPath = f.get('plain-path') ?? DEFAULTS.plainPath;
  if (!isPlainPath(plainPath)) bad(`--plain-path must be ${PLAIN_PATHS.join(' or ')}`);
  const vtep = f.get('vtep') ?? DEFAULTS.vtep;
  if (!isVtepKind(vtep)) bad(`--vtep must be ${VTEP_KINDS.join(' or ')}`);
  const linkNet = f.get('link-net') ?? DEFAULTS.linkNet;
  if (!IPV4_RE.test(linkNet)) bad('--link-net must be an IPv4 address');
  const peerNet = f.get('peer-net') ?? DEFAULTS.peerNet;
  const peerNetBad = peerNetRefusal(peerNet);
  if (peerNetBad) bad(`--peer-net: ${peerNetBad}`);
  if (inPeerNet(peerNet, linkNet)) bad(`--link-net ${linkNet} lies in --peer-net ${peerNet}/${PEER_NET_PREFIX_LENGTH}`);
  const tlsParts = ['tlscacert', 'tlscert', 'tlskey'].filter((k) => f.has(k));
  if (tlsParts.length !== 0 && tlsParts.length !== 3) bad('--tlscacert, --tlscert and --tlskey go together');
  const dockerHost = f.get('docker-host') ?? DEFAULTS.dockerHost;
  if (!/^unix:\/\/\/./.test(dockerHost)) bad("--docker-host must be unix:///PATH (the Docker daemon's socket)");
  if (f.has('docker-host') && !f.has('docker-plugins'))
    bad('--docker-host is for the plugin: add --docker-plugins DIR');
  const hostId = f.get('host-id') ?? hostname;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/.test(hostId))
    bad(`host id "${hostId}" must be 1..128 of A-Z a-z 0-9 _ . : -`);
  return {
    // With TLS the endpoints are https (the etcd client would use TLS anyway once it has credentials).
    ...(store
      ? { clusterStore: parseClusterStore(store).map((u) => (storeTls ? u.replace(/^http:/, 'https:') : u)) }
      : {}),
    ...(storeTls ? { clusterStoreTls: storeTls } : {}),
    advertise: resolveAdvertise(advertise),
    hostId,
    dataDir: f.get('data-dir') ?? DEFAULTS.dataDir,
    apiSocket: f.get('api-socket') ?? DEFAULTS.apiSocket,
    ...(f.has('api-listen') ? { apiListen: f.get('api-listen')! } : {}),
    ...(tlsParts.length === 3
      ? { apiTls: { ca: f.get('tlscacert')!, cert: f.get('tlscert')!, key: f.get('tlskey')! } }
      : {}),
    vtepNetns: f.get('vtep-netns') ?? DEFAULTS.vtepNetns,
    linkNet,
    peerNet,
    ...(f.has('mtu') ? { underlayMtu: int(f.get('mtu')!, 'mtu', MTU_MIN, MTU_MAX) } : {}),
    ...(dataPath ? { dataPath } : {}),
    plainPath,
    vtep,
    leaseTtlSeconds: f.has('lease-ttl') ? int(f.get('lease-ttl')!, 'lease-ttl', 2, 3600) : DEFAULTS.leaseTtlSeconds,
    keyIntervalMs: f.has('key-interval') ? parseDuration(f.get('key-interval')!) : DEFAULTS.keyIntervalMs,
    keyGraceMs: f.has('key-grace') ? parseDuration(f.get('key-grace')!) : DEFAULTS.keyGraceMs,
    ...(f.has('sequence-budget')
      ? { sequenceBudget: int(f.get('sequence-budget')!, 'sequence-budget', 100, 2 ** 53 - 1) }
      : {}),
    os: f.get('os') ?? (process.platform === 'win32' ? 'windows' : process.platform),
    ...(f.has('docker-plugins')
      ? { docker: { pluginsDir: f.get('docker-plugins')!, engineSocket: dockerHost.slice('unix://'.length) } }
      : {}),
    ...(f.has('cni-sweep') ? { cniSweepMs: sweepPeriod(f.get('cni-sweep')!) } : {}),
  };
}
