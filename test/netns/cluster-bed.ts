// A namespace bed run through the control plane: etcd as one more host on the underlay
// (198.18.0.250, in its own namespace), one `veil gateway --cluster-store ...` per host,
// and containers connected through each host's API, like an operator would.
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd, type EtcdCluster } from '../support/etcd.js';
import { createBed, UNDERLAY_PREFIX_LENGTH, type Bed, type BedProcess } from './bed.js';
import { CLI } from './overlay-bed.js';

export const ETCD_ADDRESS = '198.18.0.250';

export interface ApiAnswer {
  status: number;
  body: any;
}

export interface ClusterBed {
  bed: Bed;
  dir: string;
  etcd: EtcdCluster;
  gateways: Map<number, BedProcess>;
  socket(hostIndex: number): string;
  api(hostIndex: number, method: string, path: string, body?: unknown): Promise<ApiAnswer>;
  /** Starts (or restarts) host i's gateway; resolves once it says "gateway ready". */
  startGateway(hostIndex: number, extraArgs?: string[]): Promise<BedProcess>;
  stopGateway(hostIndex: number, signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** A container namespace (not connected yet); returns its name and its /run/netns path. */
  container(label: string): Promise<{ ns: string; netns: string }>;
  /** etcdctl inside the etcd namespace. */
  etcdctl(args: string[]): Promise<string>;
  destroy(): Promise<void>;
}

export async function createClusterBed(options: { hosts: number; etcdMembers?: 1 | 3; gatewayArgs?: string[] }): Promise<ClusterBed> {
  const bed = await createBed({ hosts: options.hosts });
  const dir = mkdtempSync(join(tmpdir(), 'veil-cluster-'));
  const gateways = new Map<number, BedProcess>();
  let etcd: EtcdCluster | undefined;
  const destroy = async () => {
    await Promise.all([...gateways.values()].map((g) => g.stop(5000)));
    await etcd?.stop();
    await bed.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const ens = await bed.namespace('e');
    await bed.exec(bed.hub, ['ip', 'link', 'add', 'etcd0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ens]);
    await bed.exec(bed.hub, ['ip', 'link', 'set', 'etcd0', 'master', 'ul0', 'up']);
    await bed.exec(ens, ['ip', 'addr', 'add', `${ETCD_ADDRESS}/${UNDERLAY_PREFIX_LENGTH}`, 'dev', 'eth0']);
    await bed.exec(ens, ['ip', 'link', 'set', 'eth0', 'up']);
    etcd = await startEtcd({ members: options.etcdMembers ?? 1, netns: ens, address: ETCD_ADDRESS });
    const store = `etcd://${etcd.endpoints.map((e) => e.replace('http://', '')).join(',')}`;
    const socket = (i: number) => join(dir, `h${i}.sock`);
    const cb: ClusterBed = {
      bed,
      dir,
      etcd,
      gateways,
      socket,
      api: (i, method, path, body) => apiRequest(socket(i), method, path, body),
      async startGateway(i, extraArgs = []) {
        const host = bed.hosts[i - 1]!;
        const gw = bed.spawn(host.netns, [
          process.execPath, CLI, 'gateway',
          '--cluster-store', store,
          '--cluster-advertise', host.underlayAddress,
          '--host-id', `h${i}`,
          '--data-dir', join(dir, `h${i}`),
          '--api-socket', socket(i),
          '--vtep-netns', host.vtepNetns,
          '--link-net', `169.254.${i}.0`,
          '--lease-ttl', '4',
          '--key-grace', '2s',
          ...(options.gatewayArgs ?? []),
          ...extraArgs,
        ]);
        gateways.set(i, gw);
        await gw.waitFor(/gateway ready/, 30_000);
        return gw;
      },
      async stopGateway(i, signal = 'SIGTERM') {
        const gw = gateways.get(i);
        if (!gw) return;
        gateways.delete(i);
        if (signal === 'SIGKILL') {
          gw.child.kill('SIGKILL');
          await gw.exited;
        } else {
          await gw.stop(10_000);
        }
      },
      async container(label) {
        const ns = await bed.namespace(label);
        return { ns, netns: `/run/netns/${ns}` };
      },
      async etcdctl(args) {
        return (await bed.exec(ens, ['etcdctl', '--endpoints', etcd!.endpoints.join(','), ...args])).stdout;
      },
      destroy,
    };
    for (let i = 1; i <= options.hosts; i++) await cb.startGateway(i);
    return cb;
  } catch (err) {
    await destroy();
    throw err;
  }
}

export function apiRequest(socketPath: string, method: string, path: string, body?: unknown): Promise<ApiAnswer> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ socketPath, path, method, headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => {
        let parsed: unknown = text;
        try {
          parsed = text === '' ? undefined : JSON.parse(text);
        } catch {
          // text/plain (metrics)
        }
        resolve({ status: res.statusCode ?? 0, body: parsed });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}
