// A namespace bed with veil gateways running: hosts from bed.ts, identities and
// static keys generated here, one `veil gateway` process per host, containers
// attached through the hosts' plumbing.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { bytesToHex } from '../../../src/crypto/bytes.js';
import { deriveSaKeymat } from '../../../src/crypto/sa-keys.js';
import { SecretKey } from '../../../src/crypto/secret.js';
import { generateX25519KeyPair, type X25519KeyPair } from '../../../src/crypto/x25519.js';
import type { PairStatus } from '../../../src/vxlan/datapath.js';
import type { GatewayStatus } from '../../../src/vxlan/gateway.js';
import type { PlainNetworkCounters } from '../../../src/vxlan/plumbing.js';
import type { PlainPath } from '../../../src/model/plain-path.js';
import type { VtepKind } from '../../../src/model/vtep.js';
import { encodeSpi } from '../../../src/vxlan/wire/spi.js';
import { createBed, type Bed, type BedHost, type BedProcess } from './bed.js';

/** The repository root, whether this file runs from test/ (vitest) or dist/test/ (the benches). */
export function repoRoot(): string {
  let dir = import.meta.dirname;
  while (!existsSync(join(dir, 'package.json'))) {
    const up = resolve(dir, '..');
    if (up === dir) throw new Error('cannot find the repository root');
    dir = up;
  }
  return dir;
}

export const CLI = join(repoRoot(), 'dist/src/cli/veil.js');
/** The static gateway, a test fixture (test/system/support/static-gateway.ts), as built. */
export const STATIC_GATEWAY = join(repoRoot(), 'dist/test/system/support/static-gateway.js');

export interface NetworkDef {
  id: string;
  index: number;
  vni: number;
  encrypted: boolean;
  /** /24 prefix, e.g. "10.10.0"; container j of host i gets .(10 i + j), the gateway .1 */
  subnet: string;
}

export interface Identity {
  id: string;
  index: number;
  keys: X25519KeyPair;
  incarnation: string;
}

export interface Container {
  ns: string;
  host: BedHost;
  network: NetworkDef;
  ip: string;
  mac: string;
}

export interface OverlayBed {
  bed: Bed;
  dir: string;
  hosts: BedHost[];
  identities: Identity[];
  networks: NetworkDef[];
  secrets: Map<string, SecretKey>;
  gateways: BedProcess[];
  /** Hosts that run a gateway (the others are left for kernel VTEPs and the like). */
  veilHosts: number;
  container(hostIndex: number, network: NetworkDef, j?: number): Promise<Container>;
  /** One container per veil host on each network: network id → [host 1's, host 2's, ...]. */
  containersOnEveryHost(networks: NetworkDef[]): Promise<Map<string, Container[]>>;
  status(hostIndex: number): Promise<GatewayStatus>;
  pair(hostIndex: number, peerIndex: number, vni: number): Promise<PairStatus | undefined>;
  /**
   * A plain network in the kernel on a host, read now (the gateway's status reads it every 5 s): its
   * VXLAN device's counters, and what the host's underlay firewall refused.
   */
  plain(
    hostIndex: number,
    vni: number,
  ): Promise<
    PlainNetworkCounters['networks'][number] & Pick<PlainNetworkCounters, 'notAPeer' | 'plaintextOnEncrypted'>
  >;
  /** KEYMAT (key || salt) and SPI of the SA sender → receiver on an encrypted network, epoch 1. */
  saKey(sender: number, receiver: number, network: NetworkDef): { keymat: SecretKey; spi: number };
  destroy(): Promise<void>;
}

export const EPOCH = 1;

export async function createOverlayBed(options: {
  hosts: number;
  veilHosts?: number;
  networks: NetworkDef[];
  sequenceBudget?: number;
  /** Encrypted networks whose keys the gateways are not given (fail-closed tests). */
  withholdKeys?: string[];
  /** The gateways' data path; absent: the gateway's default (native when built). */
  dataPath?: 'ts' | 'native';
  /** How plain networks reach the underlay; absent: the default (kernel). */
  plainPath?: PlainPath;
  /** The underlay's MTU (bed.ts), given to the gateways too; absent: 1500. */
  underlayMtu?: number;
  /** Where encrypted networks meet each gateway's data path, one for all or one per host; absent: the default. */
  vtep?: VtepKind | readonly VtepKind[];
  /** Per host, a command that goes before node inside the host's namespace (e.g. `unshare --mount ...`). */
  launchers?: ReadonlyArray<readonly string[] | undefined>;
}): Promise<OverlayBed> {
  const bed = await createBed({
    hosts: options.hosts,
    ...(options.plainPath ? { plainPath: options.plainPath } : {}),
    ...(options.underlayMtu ? { underlayMtu: options.underlayMtu } : {}),
  });
  const dir = mkdtempSync(join(tmpdir(), 'veil-overlay-'));
  const veilHosts = options.veilHosts ?? options.hosts;
  const identities: Identity[] = bed.hosts.map((h) => ({
    id: `h${h.index}`,
    index: h.index,
    keys: generateX25519KeyPair(),
    incarnation: bytesToHex(randomBytes(8)),
  }));
  const secrets = new Map(
    options.networks.filter((n) => n.encrypted).map((n) => [n.id, new SecretKey(randomBytes(32))]),
  );
  const gateways: BedProcess[] = [];
  const socketOf = (i: number) => join(dir, `h${i}.sock`);

  const ob: OverlayBed = {
    bed,
    dir,
    hosts: [...bed.hosts],
    identities,
    networks: options.networks,
    secrets,
    gateways,
    veilHosts,
    async container(hostIndex, network, j = 1) {
      const host = bed.hosts[hostIndex - 1]!;
      const ns = await bed.namespace(`c${hostIndex}n${network.index}x${j}`);
      const last = 10 * hostIndex + j;
      const ip = `${network.subnet}.${last}`;
      const mac = `02:42:${hex2(network.index)}:${hex2(hostIndex)}:${hex2(j)}:${hex2(last)}`;
      await host.plumbing.attachContainer({
        vni: network.vni,
        endpointId: `${network.id}-${hostIndex}-${j}`,
        netns: { name: ns },
        mac,
        ipv4: `${ip}/24`,
      });
      return { ns, host, network, ip, mac };
    },
    async containersOnEveryHost(networks) {
      const on = new Map<string, Container[]>();
      for (const net of networks) {
        const list: Container[] = [];
        for (let i = 1; i <= veilHosts; i++) list.push(await ob.container(i, net));
        on.set(net.id, list);
      }
      return on;
    },
    async status(hostIndex) {
      return JSON.parse(await httpGet(socketOf(hostIndex), '/status')) as GatewayStatus;
    },
    async pair(hostIndex, peerIndex, vni) {
      return (await ob.status(hostIndex)).pairs.find((p) => p.peer === `h${peerIndex}` && p.vni === vni);
    },
    async plain(hostIndex, vni) {
      const { networks, notAPeer, plaintextOnEncrypted } =
        await bed.hosts[hostIndex - 1]!.plumbing.plainNetworkCounters();
      const device = networks.find((n) => n.vni === vni);
      if (!device) throw new Error(`host ${hostIndex} has no plain network ${vni} in the kernel`);
      return { ...device, notAPeer, plaintextOnEncrypted };
    },
    saKey(sender, receiver, network) {
      const s = identities[sender - 1]!;
      const r = identities[receiver - 1]!;
      const keymat = deriveSaKeymat(secrets.get(network.id)!, s.keys.privateKey, r.keys.publicKey, {
        networkId: network.id,
        vni: network.vni,
        networkIndex: network.index,
        epoch: EPOCH,
        senderId: s.id,
        receiverId: r.id,
        senderIncarnation: s.incarnation,
        receiverIncarnation: r.incarnation,
      });
      return { keymat, spi: encodeSpi(EPOCH, s.index, network.index) };
    },
    async destroy() {
      await Promise.all(gateways.map((g) => g.stop()));
      await bed.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    for (let i = 1; i <= veilHosts; i++) {
      const self = identities[i - 1]!;
      const host = bed.hosts[i - 1]!;
      const config = {
        host: {
          id: self.id,
          index: self.index,
          address: host.underlayAddress,
          privateKey: bytesToHex(self.keys.privateKey.exposeDanger()),
          incarnation: self.incarnation,
        },
        vtep: { netns: host.vtepNetns, linkNet: `169.254.${i}.0` },
        peers: identities
          .filter((p) => p.index !== i)
          .map((p) => ({
            id: p.id,
            index: p.index,
            address: bed.hosts[p.index - 1]!.underlayAddress,
            publicKey: bytesToHex(p.keys.publicKey),
            incarnation: p.incarnation,
          })),
        networks: options.networks.map((n) => ({
          id: n.id,
          index: n.index,
          vni: n.vni,
          encrypted: n.encrypted,
          ...(n.encrypted && !options.withholdKeys?.includes(n.id)
            ? { epoch: EPOCH, secret: bytesToHex(secrets.get(n.id)!.exposeDanger()) }
            : {}),
        })),
        apiSocket: socketOf(i),
        ...(options.sequenceBudget ? { sequenceBudget: options.sequenceBudget } : {}),
        ...(options.dataPath ? { dataPath: options.dataPath } : {}),
        ...(options.plainPath ? { plainPath: options.plainPath } : {}),
        ...(options.underlayMtu ? { underlayMtu: options.underlayMtu } : {}),
        ...(options.vtep
          ? { encryptedVtep: typeof options.vtep === 'string' ? options.vtep : options.vtep[i - 1] }
          : {}),
      };
      const path = join(dir, `h${i}.json`);
      writeFileSync(path, JSON.stringify(config));
      chmodSync(path, 0o600);
      const launcher = options.launchers?.[i - 1] ?? [];
      const gw = bed.spawn(host.netns, [...launcher, process.execPath, STATIC_GATEWAY, '--config', path], {
        lifetime: 'bed',
      });
      gateways.push(gw);
      await gw.waitFor(/gateway ready/, 20_000);
    }
  } catch (err) {
    await ob.destroy();
    throw err;
  }
  return ob;
}

const hex2 = (n: number) => (n & 0xff).toString(16).padStart(2, '0');

export function httpGet(socketPath: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${path}: ${res.statusCode} ${body}`)),
      );
    });
    req.on('error', reject);
    req.end();
  });
}
