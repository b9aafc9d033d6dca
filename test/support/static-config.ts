import { readFileSync, statSync } from 'node:fs';
import { hexToBytes } from '../../src/crypto/bytes.js';
import { SecretKey } from '../../src/crypto/secret.js';
import { X25519_KEY_LENGTH } from '../../src/crypto/x25519.js';
import { VeilError } from '../../src/errors.js';
import { HOST_INDEX_MAX, isVni, NETWORK_INDEX_MAX } from '../../src/model/ids.js';
import { isPlainPath, PLAIN_PATHS, type PlainPath } from '../../src/model/plain-path.js';
import { isVtepKind, VTEP_KINDS, type VtepKind } from '../../src/model/vtep.js';

/*
 * The static gateway's configuration (a test fixture: docs/testing.md "The namespace bed"): hosts,
 * networks and one epoch secret per encrypted network, in one JSON file that the bed writes afresh,
 * with fresh incarnations, for every run. It holds secrets, so it must not be readable by group or
 * others. No two networks may share an id or an index, and the SA derivation binds the VNI and the
 * index too (docs/keys.md "SA keys"): no file can make two SAs share a key.
 */

export interface StaticPeer {
  id: string;
  index: number;
  address: string;
  publicKey: Uint8Array;
  incarnation: string;
}

export interface StaticNetwork {
  id: string;
  index: number;
  vni: number;
  encrypted: boolean;
  key?: { epoch: number; secret: SecretKey };
}

export interface StaticGatewayConfig {
  host: { id: string; index: number; address: string; privateKey: SecretKey; incarnation: string };
  vtep: { netns: string; linkNet?: string };
  underlayMtu: number;
  peers: StaticPeer[];
  networks: StaticNetwork[];
  apiSocket?: string;
  sequenceBudget?: number;
  /** Absent: native when the addon is built, else TypeScript. */
  dataPath?: 'ts' | 'native';
  /** Absent: DEFAULT_PLAIN_PATH. */
  plainPath?: PlainPath;
  /** Where encrypted networks meet the data path; absent: the gateway's default (a TAP port where it can). */
  encryptedVtep?: VtepKind;
}

export const DEFAULT_UNDERLAY_MTU = 1500;

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

type Json = Record<string, unknown>;

function fail(path: string, what: string): never {
  throw new VeilError('VEIL_ERR_CONFIG_INVALID', `${path}: ${what}`);
}

function obj(v: unknown, path: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(path, 'must be an object');
  return v as Json;
}
function str(o: Json, k: string, path: string, re?: RegExp): string {
  const v = o[k];
  if (typeof v !== 'string' || v.length === 0) fail(`${path}.${k}`, 'must be a non-empty string');
  if (re && !re.test(v)) fail(`${path}.${k}`, `"${v}" is not valid`);
  return v;
}
function int(o: Json, k: string, path: string, min: number, max: number): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    fail(`${path}.${k}`, `must be an integer in ${min}..${max}`);
  return v;
}
function keyHex(o: Json, k: string, path: string, length: number): Uint8Array {
  const v = str(o, k, path);
  if (!/^[0-9a-fA-F]+$/.test(v) || v.length !== 2 * length) fail(`${path}.${k}`, `must be ${length} bytes of hex`);
  return hexToBytes(v);
}

export function parseStaticGatewayConfig(json: unknown): StaticGatewayConfig {
  const root = obj(json, 'config');
  const h = obj(root.host, 'host');
  const host = {
    id: str(h, 'id', 'host', NAME_RE),
    index: int(h, 'index', 'host', 1, HOST_INDEX_MAX),
    address: str(h, 'address', 'host', IPV4_RE),
    privateKey: new SecretKey(keyHex(h, 'privateKey', 'host', X25519_KEY_LENGTH)),
    incarnation: str(h, 'incarnation', 'host'),
  };
  const v = obj(root.vtep, 'vtep');
  const vtep = {
    netns: str(v, 'netns', 'vtep', NAME_RE),
    ...(v.linkNet !== undefined ? { linkNet: str(v, 'linkNet', 'vtep', IPV4_RE) } : {}),
  };
  const underlayMtu =
    root.underlayMtu === undefined ? DEFAULT_UNDERLAY_MTU : int(root, 'underlayMtu', 'config', 576, 65535);

  if (!Array.isArray(root.peers)) fail('peers', 'must be an array');
  const peers = (root.peers as unknown[]).map((p, i) => {
    const o = obj(p, `peers[${i}]`);
    const path = `peers[${i}]`;
    return {
      id: str(o, 'id', path, NAME_RE),
      index: int(o, 'index', path, 1, HOST_INDEX_MAX),
      address: str(o, 'address', path, IPV4_RE),
      publicKey: keyHex(o, 'publicKey', path, X25519_KEY_LENGTH),
      incarnation: str(o, 'incarnation', path),
    };
  });
  const ids = new Set([host.id]);
  const indexes = new Set([host.index]);
  peers.forEach((p, i) => {
    if (ids.has(p.id)) fail(`peers[${i}].id`, `"${p.id}" appears twice`);
    if (indexes.has(p.index)) fail(`peers[${i}].index`, `${p.index} appears twice`);
    ids.add(p.id);
    indexes.add(p.index);
  });

  if (!Array.isArray(root.networks)) fail('networks', 'must be an array');
  const vnis = new Set<number>();
  const networkIds = new Set<string>();
  const networkIndexes = new Set<number>();
  const networks = (root.networks as unknown[]).map((n, i): StaticNetwork => {
    const o = obj(n, `networks[${i}]`);
    const path = `networks[${i}]`;
    const vni = int(o, 'vni', path, 1, 0xffffff);
    if (!isVni(vni) || vnis.has(vni)) fail(`${path}.vni`, `${vni} appears twice`);
    vnis.add(vni);
    if (typeof o.encrypted !== 'boolean') fail(`${path}.encrypted`, 'must be true or false');
    const network: StaticNetwork = {
      id: str(o, 'id', path, NAME_RE),
      index: int(o, 'index', path, 0, NETWORK_INDEX_MAX),
      vni,
      encrypted: o.encrypted,
    };
    // A copied block with only vni changed would otherwise name two networks alike.
    if (networkIds.has(network.id)) fail(`${path}.id`, `"${network.id}" appears twice`);
    if (networkIndexes.has(network.index)) fail(`${path}.index`, `${network.index} appears twice`);
    networkIds.add(network.id);
    networkIndexes.add(network.index);
    if (o.secret !== undefined) {
      if (!o.encrypted) fail(`${path}.secret`, 'a plain network has no key');
      network.key = {
        epoch: int(o, 'epoch', path, 0, Number.MAX_SAFE_INTEGER),
        secret: new SecretKey(keyHex(o, 'secret', path, 32)),
      };
    }
    return network;
  });

  if (root.dataPath !== undefined && root.dataPath !== 'ts' && root.dataPath !== 'native')
    fail('config.dataPath', 'must be "ts" or "native"');
  const config: StaticGatewayConfig = { host, vtep, underlayMtu, peers, networks };
  if (root.dataPath !== undefined) config.dataPath = root.dataPath as 'ts' | 'native';
  if (root.plainPath !== undefined) {
    if (typeof root.plainPath !== 'string' || !isPlainPath(root.plainPath))
      fail('config.plainPath', `must be ${PLAIN_PATHS.map((p) => `"${p}"`).join(' or ')}`);
    config.plainPath = root.plainPath;
  }
  if (root.encryptedVtep !== undefined) {
    if (typeof root.encryptedVtep !== 'string' || !isVtepKind(root.encryptedVtep))
      fail('config.encryptedVtep', `must be ${VTEP_KINDS.map((p) => `"${p}"`).join(' or ')}`);
    config.encryptedVtep = root.encryptedVtep;
  }
  if (root.apiSocket !== undefined) config.apiSocket = str(root, 'apiSocket', 'config');
  if (root.sequenceBudget !== undefined)
    config.sequenceBudget = int(root, 'sequenceBudget', 'config', 1, Number.MAX_SAFE_INTEGER);
  return config;
}

/** Reads and validates the file; refuses one that group or others can read, since it holds keys. */
export function loadStaticGatewayConfig(path: string): StaticGatewayConfig {
  let text: string;
  try {
    if ((statSync(path).mode & 0o077) !== 0) throw new VeilError('VEIL_ERR_CONFIG_INSECURE', `${path} (chmod 600 it)`);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof VeilError) throw err;
    throw new VeilError('VEIL_ERR_CONFIG_INVALID', `${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new VeilError('VEIL_ERR_CONFIG_INVALID', `${path}: not JSON (${(err as Error).message})`);
  }
  return parseStaticGatewayConfig(json);
}
