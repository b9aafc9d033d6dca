// The control plane never waits on the underlay (docs/security.md "Guarantees"): with the underlay
// stuck, so that the native outbound thread sits in a flush waiting for send buffer room, table changes
// from JavaScript (SA installs and removals, outbound switches, peers added and removed) still complete
// at once. The proof is the thread's own counters: no flush completes while a change runs, so each change
// returned while the thread was still waiting inside one flush, long before that flush's deadline.
//
// The bed: a namespace whose underlay is a veth behind a tbf qdisc at 8 bit/s with a 100 MB queue. What
// the data plane sends toward its peer stays queued, charged to its UDP 4500 socket, whose send buffer
// fills and stays full (a receiver that does not read is not enough: loopback hands datagrams over, or
// drops them, at once). The VTEP side is loopback: a GSO sender (python3, UDP_SEGMENT) gives the
// outbound thread batches of up to 64 × 128 packets, more than one flush holds, so it also flushes in
// the middle of a batch, the moment a table lock used to be held.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBed, type Bed } from '../netns/bed.js';
import { gatewayAddress } from '../../../src/model/peer-net.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const DIST = join(ROOT, 'dist');
const PYTHON = '/usr/bin/python3';
const UNDERLAY = { self: '10.77.0.1', peer: '10.77.0.2', spare: '10.77.0.3' };
const LOOPBACK = { host: '127.0.0.2', vtep: '127.0.0.3' };
const GATEWAY_PORT = 14790;
/** The peer net on loopback: peer 2's gateway address is 127.64.0.2. */
const PEER_NET = '127.64.0.0';
const VNI = 4200;

/** VXLAN frames of VNI from the VTEP to a gateway address, as GSO super-datagrams of 128 (or 64) segments. */
const FLOOD = `
import socket, struct, sys
vtep, host, port, vni = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((vtep, 0))
seg = struct.pack('!II', 0x08000000, vni << 8) + bytes(92)
for n in (128, 64):
    try:
        s.sendmsg([seg * n], [(socket.IPPROTO_UDP, 103, struct.pack('H', len(seg)))], 0, (host, port))
        break
    except OSError:
        pass
print('flooding', n, 'segments per datagram', flush=True)
while True:
    s.sendmsg([seg * n], [(socket.IPPROTO_UDP, 103, struct.pack('H', len(seg)))], 0, (host, port))
`;

/** The native data plane in the namespace; `changes`: table changes while the thread waits, `cap`: its give-up. */
const GATEWAY = `
const { readFileSync } = await import('node:fs');
const { randomBytes } = await import('node:crypto');
const cfg = JSON.parse(readFileSync(process.argv[1], 'utf8'));
const { NativeDataPath } = await import(cfg.dist + '/src/vxlan/native/datapath.js');
const { SecretKey } = await import(cfg.dist + '/src/crypto/secret.js');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const dp = new NativeDataPath(cfg.dataplane);
await dp.start();
process.on('SIGTERM', async () => { await dp.stop(); process.exit(0); });
dp.setNetwork({ vni: cfg.vni, encrypted: true });
await dp.addPeer({ id: 'p', index: 2, address: cfg.peer });
const key = () => new SecretKey(randomBytes(20));
const sa = (spi, keymat, epoch) => ({ spi, keymat, esn: true, vni: cfg.vni, peerId: 'p', epoch });
const k1 = key(), k2 = key();
dp.activateOutbound(sa(0x40020001, k1, 1));
console.log('ready');
const io = () => dp.stats().io.outbound;
const deadline = Date.now() + 30000;
const until = async (what, cond) => {
  while (!cond()) {
    if (Date.now() > deadline) { console.log('result ' + JSON.stringify({ error: what, io: io() })); process.exit(1); }
    await sleep(10);
  }
};
await until('the outbound thread waiting for the underlay', () => io().sendWaits > 0);
if (cfg.mode === 'changes') {
  const calls = [];
  for (let i = 0; i < cfg.rounds; i++) {
    const flushes = io().txFlushes;
    const t0 = performance.now();
    dp.installInbound(sa(0x40020100 + i, key(), 1));
    dp.retireInbound('p', cfg.vni, 1);
    dp.activateOutbound(i % 2 ? sa(0x40020001, k1, 1) : sa(0x80020001, k2, 2));
    await dp.addPeer({ id: 'q', index: 3, address: cfg.spare });
    await dp.removePeer('q');
    const ms = performance.now() - t0;
    calls.push({ ms, flushesMeanwhile: io().txFlushes - flushes });
    await sleep(50);
  }
  console.log('result ' + JSON.stringify({ calls, io: io() }));
} else {
  await until('a flush giving up', () => (dp.status().unattributedDrops['send-failed'] ?? 0) > 0);
  console.log('result ' + JSON.stringify({ io: io(), sendFailed: dp.status().unattributedDrops['send-failed'] }));
}
setInterval(() => {}, 1 << 30);
`;

let bed: Bed;
let ns: string;
let dir: string;

beforeAll(async () => {
  if (!existsSync(join(DIST, 'src/vxlan/native/datapath.js')))
    throw new Error('dist/ is missing src/vxlan/native/datapath.js: run npm run build');
  bed = await createBed({ hosts: 1 });
  ns = await bed.namespace('stall');
  for (const argv of [
    ['ip', 'link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul1'],
    ['ip', 'addr', 'add', `${UNDERLAY.self}/24`, 'dev', 'ul0'],
    ['ip', 'link', 'set', 'ul0', 'up'],
    ['ip', 'link', 'set', 'ul1', 'up'],
    // No ARP through the stuck queue: the peer's address resolves to a MAC nobody has.
    ['ip', 'neigh', 'add', UNDERLAY.peer, 'lladdr', '02:00:00:00:00:02', 'dev', 'ul0', 'nud', 'permanent'],
    ['tc', 'qdisc', 'add', 'dev', 'ul0', 'root', 'tbf', 'rate', '8bit', 'burst', '1600', 'limit', '100mb'],
  ])
    await bed.exec(ns, argv);
  dir = mkdtempSync(join(tmpdir(), 'veil-blocked-underlay-'));
}, 120_000);

afterAll(async () => {
  await bed?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function run(mode: 'changes' | 'cap', sendWaitMs: number): Promise<any> {
  const path = join(dir, `${mode}-${randomBytes(4).toString('hex')}.json`);
  writeFileSync(
    path,
    JSON.stringify({
      dist: DIST,
      mode,
      rounds: 40,
      vni: VNI,
      peer: UNDERLAY.peer,
      spare: UNDERLAY.spare,
      dataplane: {
        peerNet: PEER_NET,
        underlayAddress: UNDERLAY.self,
        hostAddress: LOOPBACK.host,
        vtepAddress: LOOPBACK.vtep,
        sendWaitMs,
        ports: { delivery: 0, gateway: GATEWAY_PORT },
      },
    }),
  );
  const gateway = bed.spawn(ns, [process.execPath, '--input-type=module', '-e', GATEWAY, path]);
  await gateway.waitFor(/^ready$/, 20_000);
  const flood = bed.spawn(ns, [
    PYTHON,
    '-c',
    FLOOD,
    LOOPBACK.vtep,
    gatewayAddress(PEER_NET, 2),
    String(GATEWAY_PORT),
    String(VNI),
  ]);
  console.log(`[blocked underlay] ${await flood.waitFor(/^flooding \d+ segments per datagram$/, 10_000)}`);
  const line = await gateway.waitFor(/^result /, 45_000);
  const result = JSON.parse(line.slice('result '.length));
  expect(result.error, JSON.stringify(result)).toBeUndefined();
  return result;
}

describe('native data plane, underlay stuck', () => {
  it('table changes complete while the outbound thread waits inside one flush (deadline 30 s)', async () => {
    const r = await run('changes', 30_000);
    const slowest = Math.max(...r.calls.map((c: { ms: number }) => c.ms));
    console.log(
      `[blocked underlay] ${r.calls.length} rounds of 5 table changes, slowest ${slowest.toFixed(1)} ms; io ${JSON.stringify(r.io)}`,
    );
    expect(r.calls).toHaveLength(40);
    expect(r.io.sendWaits).toBeGreaterThan(0);
    // No flush ended while any change ran: each returned with the thread still waiting in its flush.
    expect(r.calls.filter((c: { flushesMeanwhile: number }) => c.flushesMeanwhile !== 0)).toEqual([]);
  }, 90_000);

  it('a flush that cannot finish gives up at its deadline and counts the rest as send-failed', async () => {
    const r = await run('cap', 200);
    console.log(`[blocked underlay] send-failed ${r.sendFailed}; io ${JSON.stringify(r.io)}`);
    expect(r.sendFailed).toBeGreaterThan(0);
    expect(r.io.txFlushes).toBeGreaterThan(0);
  }, 90_000);
});
