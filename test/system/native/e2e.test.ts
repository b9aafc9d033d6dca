// End to end on a two-host namespace bed: each host runs the native data plane (a small Node script in
// the host netns, static keys derived as sa/derive.ts does); containers on an encrypted and on a plain
// network ping each other and a 20 MB TCP transfer arrives intact over the encrypted one.
// (Throughput is measured by bench/overlay, which runs the gateway on the native path.)
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bytesToHex } from '../../../src/crypto/bytes.js';
import { deriveSaKeymat } from '../../../src/crypto/sa-keys.js';
import { SecretKey } from '../../../src/crypto/secret.js';
import { generateX25519KeyPair } from '../../../src/crypto/x25519.js';
import type { GatewayStatus } from '../../../src/vxlan/gateway.js';
import { encodeSpi } from '../../../src/vxlan/wire/spi.js';
import { VTEP_GATEWAY_PORT } from '../../../src/vxlan/wire/constants.js';
import { gatewayAddress } from '../../../src/model/peer-net.js';
import { HOST_LINK } from '../../../src/host/names.js';
import { createBed, type Bed, type BedProcess } from '../netns/bed.js';
import { tcpTransfer } from '../support/tcp-transfer.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const DIST = join(ROOT, 'dist');
const ADDON = join(ROOT, 'native/build/Release/veil_native.node');
const EPOCH = 1;
const ENC = { id: 'enc', index: 1, vni: 4200, encrypted: true, subnet: '10.61.0' };
const PLAIN = { id: 'plain', index: 2, vni: 4201, encrypted: false, subnet: '10.62.0' };

/** Runs in a host netns: the native data plane with the SAs of its config file; "status N" on SIGUSR1. */
const GATEWAY_SCRIPT = `
const { readFileSync } = await import('node:fs');
const cfg = JSON.parse(readFileSync(process.argv[1], 'utf8'));
const { NativeDataPath } = await import(cfg.dist + '/src/vxlan/native/datapath.js');
const { SecretKey } = await import(cfg.dist + '/src/crypto/secret.js');
const { hexToBytes } = await import(cfg.dist + '/src/crypto/bytes.js');
const dp = new NativeDataPath(cfg.dataplane);
await dp.start();
for (const n of cfg.networks) dp.setNetwork(n);
for (const p of cfg.peers) await dp.addPeer(p);
const sa = (s) => ({ ...s, keymat: new SecretKey(hexToBytes(s.keymat)) });
for (const s of cfg.inbound) dp.installInbound(sa(s));
for (const s of cfg.outbound) dp.activateOutbound(sa(s));
let n = 0;
process.on('SIGUSR1', () => console.log('status ' + (++n) + ' ' + JSON.stringify({ ...dp.status(), io: dp.stats().io })));
process.on('SIGTERM', async () => { await dp.stop(); process.exit(0); });
console.log('native gateway ready');
setInterval(() => {}, 1 << 30);
`;

interface Host {
  index: number;
  netns: string;
  address: string;
  gateway?: BedProcess;
  statusCount: number;
}

let bed: Bed;
let dir: string;
const hosts: Host[] = [];
const containers = new Map<string, { ns: string; ip: string }>(); // `${network}/${host}`

async function status(h: Host): Promise<GatewayStatus & { io: unknown }> {
  const n = ++h.statusCount;
  process.kill(h.gateway!.pid, 'SIGUSR1');
  const line = await h.gateway!.waitFor(new RegExp(`^status ${n} `), 5_000);
  return JSON.parse(line.slice(`status ${n} `.length)) as GatewayStatus & { io: unknown };
}

async function ping(from: string, to: string, count = 3): Promise<{ ok: boolean; avgMs?: number }> {
  const r = await bed.exec(from, ['ping', '-n', '-q', '-c', String(count), '-i', '0.05', '-W', '2', to], {
    allowFail: true,
  });
  const m = /= [\d.]+\/([\d.]+)\//.exec(r.stdout);
  return { ok: r.code === 0, ...(m ? { avgMs: Number(m[1]) } : {}) };
}

beforeAll(async () => {
  if (!existsSync(ADDON)) throw new Error(`${ADDON} is missing: run npm run build:native`);
  if (!existsSync(join(DIST, 'src/vxlan/native/datapath.js')))
    throw new Error('dist/ is missing src/vxlan/native/datapath.js: run npm run build');
  // The plain network passes through the native data plane (the gateway plain path), as it relays it.
  bed = await createBed({ hosts: 2, plainPath: 'gateway' });
  dir = mkdtempSync(join(tmpdir(), 'veil-native-e2e-'));
  const ids = bed.hosts.map((h) => ({
    id: `h${h.index}`,
    index: h.index,
    keys: generateX25519KeyPair(),
    incarnation: bytesToHex(randomBytes(8)),
  }));
  const secret = new SecretKey(randomBytes(32));
  const keymat = (s: (typeof ids)[number], r: (typeof ids)[number]) => ({
    spi: encodeSpi(EPOCH, s.index, ENC.index),
    keymat: bytesToHex(
      deriveSaKeymat(secret, s.keys.privateKey, r.keys.publicKey, {
        networkId: ENC.id,
        vni: ENC.vni,
        networkIndex: ENC.index,
        epoch: EPOCH,
        senderId: s.id,
        receiverId: r.id,
        senderIncarnation: s.incarnation,
        receiverIncarnation: r.incarnation,
      }).exposeDanger(),
    ),
  });
  for (const h of bed.hosts) {
    const self = ids[h.index - 1]!;
    const others = ids.filter((p) => p.index !== h.index);
    for (const net of [ENC, PLAIN]) {
      await h.plumbing.ensureNetwork({ vni: net.vni, encrypted: net.encrypted });
      for (const p of others) await h.plumbing.ensurePeerFlood(net.vni, gatewayAddress(h.plumbing.peerNet, p.index));
      const ns = await bed.namespace(`c${h.index}n${net.index}`);
      const ip = `${net.subnet}.${10 + h.index}`;
      await h.plumbing.attachContainer({
        vni: net.vni,
        endpointId: `${net.id}-${h.index}`,
        netns: { name: ns },
        mac: `02:42:0${net.index}:00:00:0${h.index}`,
        ipv4: `${ip}/24`,
      });
      // No IPv6 chatter (router solicitations, MLD) at random times: the injection test compares counters.
      await bed.exec(ns, [
        'sysctl',
        '-q',
        '-w',
        'net.ipv6.conf.all.disable_ipv6=1',
        'net.ipv6.conf.default.disable_ipv6=1',
      ]);
      containers.set(`${net.id}/${h.index}`, { ns, ip });
    }
    const config = {
      dist: DIST,
      dataplane: {
        underlayAddress: h.underlayAddress,
        hostAddress: h.plumbing.hostAddress,
        vtepAddress: h.plumbing.vtepAddress,
        peerNet: h.plumbing.peerNet,
        gatewayDevice: HOST_LINK,
      },
      networks: [ENC, PLAIN].map((n) => ({ vni: n.vni, encrypted: n.encrypted })),
      peers: others.map((p) => ({ id: p.id, index: p.index, address: bed.hosts[p.index - 1]!.underlayAddress })),
      outbound: others.map((p) => ({ ...keymat(self, p), esn: true, vni: ENC.vni, peerId: p.id, epoch: EPOCH })),
      inbound: others.map((p) => ({ ...keymat(p, self), esn: true, vni: ENC.vni, peerId: p.id, epoch: EPOCH })),
    };
    const path = join(dir, `h${h.index}.json`);
    writeFileSync(path, JSON.stringify(config));
    chmodSync(path, 0o600);
    const gateway = bed.spawn(h.netns, [process.execPath, '--input-type=module', '-e', GATEWAY_SCRIPT, path], {
      lifetime: 'bed',
    });
    await gateway.waitFor(/native gateway ready/, 20_000);
    hosts.push({ index: h.index, netns: h.netns, address: h.underlayAddress, gateway, statusCount: 0 });
  }
}, 180_000);

afterAll(async () => {
  await bed?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('native data plane on a two-host bed', () => {
  it('containers ping across hosts on the encrypted and on the plain network', async () => {
    for (const net of [ENC, PLAIN]) {
      const a = containers.get(`${net.id}/1`)!;
      const b = containers.get(`${net.id}/2`)!;
      expect((await ping(a.ns, b.ip)).ok, `${net.id}: ${a.ip} → ${b.ip}`).toBe(true);
      expect((await ping(b.ns, a.ip)).ok, `${net.id}: ${b.ip} → ${a.ip}`).toBe(true);
    }
    const s1 = await status(hosts[0]!);
    const enc = s1.pairs.find((p) => p.peer === 'h2' && p.vni === ENC.vni)!;
    expect(enc.outbound?.sealed).toBeGreaterThan(0);
    expect(enc.inbound[0]!.opened).toBeGreaterThan(0);
    expect(s1.pairs.find((p) => p.peer === 'h2' && p.vni === PLAIN.vni)!.rxPackets).toBeGreaterThan(0);
  }, 60_000);

  it('a 20 MB TCP transfer over the encrypted network arrives intact, sealed and opened by the native path', async () => {
    const a = containers.get('enc/1')!;
    const b = containers.get('enc/2')!;
    const before = await status(hosts[1]!);
    const bytes = 20 * 1000 * 1000;
    const r = await tcpTransfer(bed, {
      fromNs: a.ns,
      toNs: b.ns,
      toIp: b.ip,
      bytes,
      seed: 'native-e2e',
      timeoutMs: 60_000,
    });
    console.log(
      `[native e2e] 20 MB in ${(r.received.ms / 1e3).toFixed(2)} s = ${((r.mbPerSecond * 8) / 1e3).toFixed(2)} Gbit/s`,
    );
    expect(r.sent.bytes).toBe(bytes);
    expect(r.received.bytes).toBe(bytes);
    expect(r.received.sha256).toBe(r.expectedSha256);
    const after = await status(hosts[1]!);
    const pairBefore = before.pairs.find((p) => p.peer === 'h1' && p.vni === ENC.vni)!;
    const pairAfter = after.pairs.find((p) => p.peer === 'h1' && p.vni === ENC.vni)!;
    expect(pairAfter.rxPackets - pairBefore.rxPackets).toBeGreaterThanOrEqual(Math.floor(bytes / 1500));
    for (const reason of [
      'auth-failed',
      'vni-mismatch',
      'plaintext-on-encrypted',
      'bad-padding',
      'bad-inner-udp',
    ] as const) {
      expect(pairAfter.drops[reason] ?? 0, reason).toBe(0);
    }
    console.log(`[native e2e] h2 io ${JSON.stringify(after.io)}`);
  }, 120_000);

  it('an unprivileged process in the host namespace cannot inject at the gateway addresses (unauthorized-source)', async () => {
    const h1 = hosts[0]!;
    const before = await status(h1);
    const sealedBefore = before.pairs.find((p) => p.peer === 'h2' && p.vni === ENC.vni)!.outbound!.sealed;
    // A VXLAN frame for the encrypted network, sent as nobody to the gateway address of peer 2 (any local source).
    const inject = `const s = require('node:dgram').createSocket('udp4'); const b = Buffer.alloc(64); b[0] = 8; b.writeUIntBE(${ENC.vni}, 4, 3);
      let n = 0; const go = () => s.send(b, ${VTEP_GATEWAY_PORT}, process.argv[1], () => (++n < 20 ? go() : s.close())); go();`;
    const r = await bed.exec(
      h1.netns,
      [
        'setpriv',
        '--reuid=nobody',
        '--regid=nogroup',
        '--clear-groups',
        process.execPath,
        '-e',
        inject,
        gatewayAddress(bed.hosts[0]!.plumbing.peerNet, 2),
      ],
      { allowFail: true },
    );
    expect(r.code, r.stderr).toBe(0);
    await new Promise((res) => setTimeout(res, 200));
    const after = await status(h1);
    expect(
      (after.unattributedDrops['unauthorized-source'] ?? 0) - (before.unattributedDrops['unauthorized-source'] ?? 0),
    ).toBe(20);
    expect(after.pairs.find((p) => p.peer === 'h2' && p.vni === ENC.vni)!.outbound!.sealed).toBe(sealedBefore);
  }, 30_000);

  it('the wire carries ESP in UDP 4500 only for the encrypted network (no plaintext VXLAN of its VNI)', async () => {
    const h1 = hosts[0]!;
    const cap = bed.spawn(h1.netns, ['tcpdump', '-n', '-i', 'eth0', '-c', '40', '-l', 'udp']);
    await new Promise((r) => setTimeout(r, 500));
    await ping(containers.get('enc/1')!.ns, containers.get('enc/2')!.ip, 5);
    await cap.stop();
    const lines = cap
      .stdout()
      .split('\n')
      .filter((l) => l.includes('198.18.0.'));
    // ESP in UDP 4500 both ways; VXLAN on 4789 only for the plain network (tcpdump decodes it: "vni N").
    expect(lines.filter((l) => /198\.18\.0\.1\.4500 > 198\.18\.0\.2\.4500/.test(l)).length).toBeGreaterThan(0);
    expect(lines.filter((l) => /198\.18\.0\.2\.4500 > 198\.18\.0\.1\.4500/.test(l)).length).toBeGreaterThan(0);
    expect(lines.filter((l) => l.includes(`vni ${ENC.vni}`))).toEqual([]);
  }, 30_000);
});
