// A gateway with every peer the SPI layout allows (16,383), on both data paths, in a namespace with the
// real plumbing (docs/plumbing.md "Gateway addresses"): the VTEP's frames to any peer's gateway address
// reach that peer and no other. It also measures what a peer costs each data path: the native path has
// one gateway socket whatever the number of peers, the TypeScript path one socket per peer.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HOST_LINK } from '../../../src/host/names.js';
import { HOST_INDEX_MAX } from '../../../src/model/ids.js';
import { gatewayAddress } from '../../../src/model/peer-net.js';
import { VTEP_GATEWAY_PORT } from '../../../src/vxlan/wire/constants.js';
import { createBed, type Bed, type BedProcess } from '../netns/bed.js';

const DIST = join(resolve(dirname(fileURLToPath(import.meta.url)), '../../..'), 'dist');
const PYTHON = '/usr/bin/python3';
const VNI = 4300;
/** Peer i's underlay address: 10.200.0.0/16 + i, routed out of eth0 (nobody answers; the count is what matters). */
const PEERS_NET = '10.200.0.0/16';
/** Indexes probed: both ends, byte boundaries, the middle. */
const SAMPLE = [1, 2, 254, 255, 256, 257, 8191, 8192, 16_382, HOST_INDEX_MAX];

/** In the host netns: a data path with HOST_INDEX_MAX peers; prints what adding them cost, and on SIGUSR1 each sampled pair's tx. */
const GATEWAY_SCRIPT = `
const { readFileSync, readdirSync } = await import('node:fs');
const cfg = JSON.parse(readFileSync(process.argv[1], 'utf8'));
const { NativeDataPath } = await import(cfg.dist + '/src/vxlan/native/datapath.js');
const { TsDataPath } = await import(cfg.dist + '/src/vxlan/ts/datapath.js');
const { DgramUnderlay, DgramVtep } = await import(cfg.dist + '/src/vxlan/ts/dgram.js');
const { nodeAeadProvider } = await import(cfg.dist + '/src/crypto/aead-node.js');
const dp = cfg.kind === 'native'
  ? new NativeDataPath({ underlayAddress: cfg.underlay, hostAddress: cfg.host, vtepAddress: cfg.vtep, peerNet: cfg.peerNet, gatewayDevice: cfg.device })
  : new TsDataPath({ vtepAddress: cfg.vtep, peerNet: cfg.peerNet, underlay: new DgramUnderlay(cfg.underlay), vtep: new DgramVtep(cfg.host, cfg.vtep), provider: nodeAeadProvider });
await dp.start();
dp.setNetwork({ vni: cfg.vni, encrypted: false });
const fds = () => readdirSync('/proc/self/fd').length;
const rss = () => process.memoryUsage().rss;
const addr = (i) => '10.200.' + (i >> 8) + '.' + (i & 255);
const [fd0, rss0, t0] = [fds(), rss(), performance.now()];
for (let i = 1; i <= cfg.peers; i++) await dp.addPeer({ id: 'p' + i, index: i, address: addr(i) });
const ms = performance.now() - t0;
console.log('added ' + JSON.stringify({ ms, fds: fds() - fd0, rssMiB: (rss() - rss0) / 2 ** 20 }));
let n = 0;
process.on('SIGUSR1', () => {
  const s = dp.status();
  const tx = Object.fromEntries(s.pairs.filter((p) => p.vni === cfg.vni && p.txPackets > 0).map((p) => [p.peer, p.txPackets]));
  console.log('status ' + (++n) + ' ' + JSON.stringify({ tx, unattributed: s.unattributedDrops }));
});
process.on('SIGTERM', async () => { await dp.stop(); process.exit(0); });
console.log('ready');
setInterval(() => {}, 1 << 30);
`;

/** In the vtep netns, as the VTEP (its address): one VXLAN datagram of VNI to each gateway address given. */
const PROBE = String.raw`
import socket, struct, sys
src, port, vni = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
frame = struct.pack('!II', 0x08000000, vni << 8) + bytes(60)
for gateway in sys.argv[4:]:
    s.sendto(frame, (gateway, port))
print('sent', len(sys.argv) - 4)
`;

let bed: Bed;
let dir: string;

beforeAll(async () => {
  bed = await createBed({ hosts: 1 });
  dir = mkdtempSync(join(tmpdir(), 'veil-many-peers-'));
  await bed.exec(bed.hosts[0]!.netns, ['ip', 'route', 'add', PEERS_NET, 'dev', 'eth0']);
}, 60_000);

afterAll(async () => {
  await bed?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

for (const kind of ['native', 'ts'] as const) {
  describe(`${HOST_INDEX_MAX} peers [${kind} data path]`, () => {
    let gateway: BedProcess;
    let statusCount = 0;
    const status = async (): Promise<{ tx: Record<string, number>; unattributed: Record<string, number> }> => {
      process.kill(gateway.pid, 'SIGUSR1');
      const line = await gateway.waitFor(new RegExp(`^status ${++statusCount} `), 10_000);
      return JSON.parse(line.slice(line.indexOf('{')));
    };

    it('every gateway address leads to its own peer; what the peers cost', async () => {
      const host = bed.hosts[0]!;
      const path = join(dir, `${kind}.json`);
      writeFileSync(
        path,
        JSON.stringify({
          dist: DIST,
          kind,
          vni: VNI,
          peers: HOST_INDEX_MAX,
          underlay: host.underlayAddress,
          host: host.plumbing.hostAddress,
          vtep: host.plumbing.vtepAddress,
          peerNet: host.plumbing.peerNet,
          device: HOST_LINK,
        }),
      );
      chmodSync(path, 0o600);
      gateway = bed.spawn(host.netns, [process.execPath, '--input-type=module', '-e', GATEWAY_SCRIPT, path]);
      try {
        const added = JSON.parse((await gateway.waitFor(/^added /, 120_000)).slice('added '.length)) as {
          ms: number;
          fds: number;
          rssMiB: number;
        };
        await gateway.waitFor(/^ready$/, 10_000);
        console.log(
          `[many peers ${kind}] ${HOST_INDEX_MAX} peers added in ${added.ms.toFixed(0)} ms; ` +
            `+${added.fds} descriptors, +${added.rssMiB.toFixed(1)} MiB RSS`,
        );
        // The native path's one gateway socket serves every peer; the TypeScript path binds one per peer.
        expect(added.fds).toBe(kind === 'native' ? 0 : HOST_INDEX_MAX);

        const probe = await bed.exec(host.vtepNetns, [
          PYTHON,
          '-c',
          PROBE,
          host.plumbing.vtepAddress,
          String(VTEP_GATEWAY_PORT),
          String(VNI),
          ...SAMPLE.map((i) => gatewayAddress(host.plumbing.peerNet, i)),
        ]);
        expect(probe.stdout.trim()).toBe(`sent ${SAMPLE.length}`);
        let last = await status();
        for (let t = 0; t < 50 && Object.keys(last.tx).length < SAMPLE.length; t++) {
          await new Promise((r) => setTimeout(r, 100));
          last = await status();
        }
        // Each probe went to the peer its address names, once; nothing to any other peer, nothing unattributed.
        expect(last.tx).toEqual(Object.fromEntries(SAMPLE.map((i) => [`p${i}`, 1])));
        expect(last.unattributed).toEqual({});
      } finally {
        await gateway.stop();
      }
    }, 180_000);
  });
}
