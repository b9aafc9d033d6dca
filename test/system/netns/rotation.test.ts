// Key rotation end to end (docs/keys.md "Rotation"): real etcd, three `veil gateway`
// processes, real packets. Hitless forced rotations under a ping flood and TCP streams; a gateway
// restart (new incarnation, no (key, nonce) reuse); etcd holds no usable key; a member's key does
// not open another member's wrapped copy.
import { createDecipheriv } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { hexToBytes } from '../../../src/crypto/bytes.js';
import { SecretKey } from '../../../src/crypto/secret.js';
import { unwrapForSelf } from '../../../src/keyrotation/wrapping.js';
import type { KeyEpochRecord } from '../../../src/store/types.js';
import type { UdpDatagram } from '../support/pcap.js';
import { documentedKeymat } from '../../support/documented-keymat.js';
import { waitFor } from '../../support/wait.js';
import { MiB, tcpTransfer } from '../support/tcp-transfer.js';
import { captureUdp } from './capture.js';
import {
  copiesPrefix,
  createClusterBed,
  encryptedNetworkWithContainers,
  etcdGetPrefix,
  etcdHistory,
  gatewayDrops,
  hostIdentityHex,
  keysOf,
  outboundEpoch,
  parseCopies,
  pingLoop,
  type ClusterBed,
  type EtcdCopy,
} from './cluster-bed.js';
import { cleanUpClusterBed } from './cluster-hooks.js';

const NET = 'rot';
const HOSTS = [1, 2, 3] as const;
const WATCHED_DROPS = ['auth-failed', 'unknown-spi', 'no-outbound-sa', 'replay-duplicate'] as const;

let cb: ClusterBed;
let networkId = '';
/** The network as the data plane names it: its VNI (GET /networks) and its index (the SPI's low 16 bits). */
let networkVni = 0;
const c: Record<number, { ns: string; netns: string; ip: string }> = {};

beforeAll(async () => {
  cb = await createClusterBed({ hosts: 3 });
  const made = await encryptedNetworkWithContainers(cb, {
    name: NET,
    subnet: '10.66.0.0/24',
    label: 'rot',
    hosts: HOSTS,
  });
  networkId = made.networkId;
  networkVni = made.vni;
  Object.assign(c, made.containers);
  console.log(
    `after bring-up: drops per host ${JSON.stringify(await Promise.all(HOSTS.map((h) => gatewayDrops(cb, h))))}`,
  );
}, 180_000);
cleanUpClusterBed(() => cb);

/** The drop counters that must stay 0, summed over every host's /status pairs and unattributed drops. */
async function watchedDrops(): Promise<Record<string, number>> {
  const all = await Promise.all(HOSTS.map((h) => gatewayDrops(cb, h)));
  return Object.fromEntries(WATCHED_DROPS.map((r) => [r, all.reduce((n, d) => n + (d[r] ?? 0), 0)]));
}

/** The newest epoch every host seals with (OutboundHere), or 0 when some host seals with none. */
async function commonOutbound(): Promise<number[]> {
  return Promise.all(HOSTS.map(async (h) => outboundEpoch(await keysOf(cb, h, NET)) ?? 0));
}

/** POST rotate on host `via`, then wait until every host seals with an epoch newer than AfterEpoch. Returns ms taken. */
async function rotate(via: number, timeoutMs = 60_000): Promise<{ ms: number; epoch: number }> {
  const t0 = performance.now();
  const r = await cb.api(via, 'POST', `/networks/${NET}/rotate`);
  if (r.status !== 202) throw new Error(`rotate on h${via}: ${r.status} ${JSON.stringify(r.body)}`);
  const target = (r.body.AfterEpoch as number) + 1;
  const epochs = await waitFor(
    async () => {
      const e = await commonOutbound();
      return e.every((x) => x >= target) ? e : undefined;
    },
    timeoutMs,
    `every host outbound on epoch ≥ ${target} (rotation via h${via})`,
  );
  return { ms: performance.now() - t0, epoch: Math.min(...epochs) };
}

describe('hitless key rotation', () => {
  it('20 forced rotations under a ping flood and TCP streams: no loss, no auth/SPI/replay drop, streams intact', async () => {
    const startEpoch = Math.min(...(await commonOutbound()));
    const dropsBefore = await watchedDrops();
    const flood12 = pingLoop(cb, c[1]!.ns, c[2]!.ip, { interval: '0.005', perRun: 1000, waitS: 2 });
    const flood23 = pingLoop(cb, c[2]!.ns, c[3]!.ip, { interval: '0.005', perRun: 1000, waitS: 2 });
    // TCP streams 3 → 1 back to back (each hash-verified) for as long as the rotations last.
    let streaming = true;
    const transfers: Array<{ bytes: number; ok: boolean; mbPerSecond: number }> = [];
    const streams = (async () => {
      for (let k = 0; streaming; k++) {
        const t = await tcpTransfer(cb.bed, {
          fromNs: c[3]!.ns,
          toNs: c[1]!.ns,
          toIp: c[1]!.ip,
          bytes: 4 * MiB,
          seed: `rot-${k}`,
          port: 5301,
          timeoutMs: 60_000,
        }).catch((err: Error) => {
          console.log(`tcp stream ${k} failed: ${err.message}`);
          return undefined;
        });
        if (!t) {
          transfers.push({ bytes: 0, ok: false, mbPerSecond: 0 });
          continue;
        }
        transfers.push({
          bytes: t.received.bytes,
          ok:
            t.received.sha256 === t.expectedSha256 &&
            t.sent.sha256 === t.expectedSha256 &&
            t.received.bytes === 4 * MiB,
          mbPerSecond: t.mbPerSecond,
        });
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const times: number[] = [];
    let epoch = startEpoch;
    try {
      await new Promise((r) => setTimeout(r, 1_000));
      for (let k = 0; k < 20; k++) {
        const r = await rotate(HOSTS[k % 3]!);
        expect(r.epoch).toBeGreaterThan(epoch);
        epoch = r.epoch;
        times.push(r.ms);
      }
      await new Promise((r) => setTimeout(r, 1_000));
    } finally {
      streaming = false;
    }
    await streams;
    const [p12, p23] = await Promise.all([flood12.stop(), flood23.stop()]);
    const dropsAfter = await watchedDrops();
    const delta = Object.fromEntries(WATCHED_DROPS.map((r) => [r, dropsAfter[r]! - dropsBefore[r]!]));
    const sorted = [...times].sort((a, b) => a - b);
    console.log(
      `hitless rotation: epochs ${startEpoch} → ${epoch}; rotate→all-outbound ms median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} max ${sorted.at(-1)!.toFixed(0)}; ` +
        `ping h1→h2 ${p12.received}/${p12.transmitted} (${p12.runs} runs), h2→h3 ${p23.received}/${p23.transmitted}; ` +
        `tcp h3→h1 ${transfers.length} streams ${(transfers.reduce((n, t) => n + t.bytes, 0) / MiB).toFixed(0)} MiB, intact ${transfers.filter((t) => t.ok).length}; ` +
        `drops ${JSON.stringify(delta)} (absolute ${JSON.stringify(dropsAfter)})`,
    );
    expect(epoch - startEpoch).toBeGreaterThanOrEqual(20);
    expect(p12.transmitted).toBeGreaterThan(1000);
    expect(p12.received).toBe(p12.transmitted);
    expect(p23.received).toBe(p23.transmitted);
    expect(transfers.length).toBeGreaterThan(0);
    expect(transfers.every((t) => t.ok)).toBe(true);
    for (const r of WATCHED_DROPS) expect(dropsAfter[r], r).toBe(0);
  }, 600_000);
});

interface HostView {
  Id: string;
  Index: number;
  Incarnation: string;
  PublicKey: string;
}
/** The network index field of an SPI written as hex (docs/wire.md "SPI layout": its low 16 bits). */
const networkIndexOf = (spi: string): number => Number(spi) & 0xffff;

interface PeerOutbound {
  SPI: string;
  Epoch: number;
  Sealed: number;
  SequenceHeadroom: number;
}

async function hostsView(via: number): Promise<Map<string, HostView>> {
  const r = await cb.api(via, 'GET', '/hosts');
  return new Map((r.body as HostView[]).map((h) => [h.Id, h]));
}

/** Host `from`'s outbound SA toward host `to` on the network (GET /networks/{id}/status). */
async function outboundToward(from: number, to: number): Promise<PeerOutbound | null> {
  const st = (await cb.api(from, 'GET', `/networks/${NET}/status`)).body as {
    Peers: Array<{ Host: string; Outbound: PeerOutbound | null }>;
  };
  return st.Peers.find((p) => p.Host === `h${to}`)?.Outbound ?? null;
}

/** The network's epoch records as etcd holds them (state and times). */
async function epochRecords(): Promise<KeyEpochRecord[]> {
  const { kvs } = await etcdGetPrefix(cb, `/veil/v1/keys/${networkId}/`);
  return kvs.map((kv) => JSON.parse(kv.value.toString('utf8')) as KeyEpochRecord).sort((a, b) => a.epoch - b.epoch);
}

/** The network's wrapped copies as etcd holds them now. */
async function epochCopies(): Promise<EtcdCopy[]> {
  return parseCopies((await etcdGetPrefix(cb, copiesPrefix(networkId))).kvs, networkId);
}

/** A host's copy of an epoch, or null (what Store.getCopy answers). */
const copyOf = (copies: EtcdCopy[], epoch: number, hostId: string): string | null =>
  copies.find((c) => c.epoch === epoch && c.hostId === hostId)?.wrapped ?? null;

function identity(h: number): SecretKey {
  return new SecretKey(hexToBytes(hostIdentityHex(cb, h)));
}

async function pingCount(from: number, to: number, count: number): Promise<{ sent: number; received: number }> {
  const r = await cb.bed.exec(
    c[from]!.ns,
    ['ping', '-n', '-q', '-c', String(count), '-i', '0.01', '-W', '2', c[to]!.ip],
    { allowFail: true, timeoutMs: 60_000 },
  );
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  return { sent: Number(m?.[1] ?? 0), received: Number(m?.[2] ?? 0) };
}

describe('a restarted gateway', () => {
  /*
   * No (key, nonce) reuse across a restart. An ESP nonce is salt(4) || IV(8) with IV = the 64-bit
   * sequence number, and (AES key, salt) = KEYMAT(epoch secret, X25519(s, r), network, epoch, s, r,
   * incarnation(s), incarnation(r)) (src/crypto/sa-keys.ts; the receiver's incarnation is beyond
   * docs/keys.md "SA keys"). A sender's counter lives only in its process memory, so a counter
   * may start again at 1 only under a KEYMAT never used before:
   *  - the restarted host h2 drew a new incarnation: every SA that has h2 at either end (h2→h1,
   *    h1→h2, h2→h3, h3→h2) gets a new KEYMAT — asserted below by deriving old and new — so h2's
   *    counters starting at 1, and its peers' counters toward it starting again, reuse no nonce
   *    under any key (and traffic recorded before the restart cannot be replayed into h2's empty
   *    replay window: its keys are gone);
   *  - an SA between two hosts that did not restart (h1→h3) keeps its KEYMAT (same epoch, both
   *    incarnations unchanged), so its counter must go on: asserted below by the same SPI and
   *    epoch and a Sealed count that kept growing from where it was.
   * And the wire agrees: no auth failure anywhere (no host sealed with a key its peer did not derive).
   */
  it('new incarnation, traffic resumes with no auth failure; SAs touching it are re-keyed, the others keep their counters', async () => {
    const before = await hostsView(1);
    const incBefore = before.get('h2')!.Incarnation;
    for (const [a, b] of [
      [1, 2],
      [3, 2],
      [2, 1],
      [1, 3],
    ] as const)
      expect((await pingCount(a, b, 100)).received).toBe(100);
    const out12 = (await outboundToward(1, 2))!;
    const out21 = (await outboundToward(2, 1))!;
    const out13 = (await outboundToward(1, 3))!;
    const authBefore = (await watchedDrops())['auth-failed'];
    expect(out12.Sealed).toBeGreaterThanOrEqual(100);

    const t0 = performance.now();
    const gw2 = cb.gateways.get(2)!;
    await cb.stopGateway(2, 'SIGTERM');
    const exit2 = await gw2.exited;
    const stopMs = performance.now() - t0;
    await cb.startGateway(2);
    const startMs = performance.now() - t0 - stopMs;
    await waitFor(
      async () =>
        (await cb.bed.exec(c[1]!.ns, ['ping', '-c', '1', '-W', '1', c[2]!.ip], { allowFail: true })).code === 0,
      30_000,
      'ping h1→h2 after the restart',
    );
    const resumeMs = performance.now() - t0;
    const after = await hostsView(1);
    const incAfter = after.get('h2')!.Incarnation;
    const pings = await Promise.all(
      (
        [
          [1, 2],
          [3, 2],
          [2, 1],
          [1, 3],
        ] as const
      ).map(([a, b]) => pingCount(a, b, 50)),
    );
    const n12 = (await outboundToward(1, 2))!;
    const n21 = (await outboundToward(2, 1))!;
    const n13 = (await outboundToward(1, 3))!;
    const drops = await Promise.all(HOSTS.map((h) => gatewayDrops(cb, h)));
    const sa = (o: PeerOutbound) => `${o.SPI}/e${o.Epoch} sealed ${o.Sealed}`;
    console.log(
      `restart h2: stop ${stopMs.toFixed(0)} ms (${JSON.stringify(exit2)}), start to ready ${startMs.toFixed(0)} ms, ping resumed ${resumeMs.toFixed(0)} ms after the SIGTERM; ` +
        `incarnation ${incBefore} → ${incAfter}; h1→h2 ${sa(out12)} → ${sa(n12)}; h2→h1 ${sa(out21)} → ${sa(n21)}; h1→h3 ${sa(out13)} → ${sa(n13)}; ` +
        `pings ${pings.map((p) => `${p.received}/${p.sent}`).join(' ')}; drops ${JSON.stringify(drops)}`,
    );
    // A clean stop: the gateway exits by itself on SIGTERM (the bed SIGKILLs after 10 s).
    expect(exit2, 'exit on SIGTERM').toEqual({ code: 0, signal: null });
    expect(incAfter).not.toBe(incBefore);
    for (const h of ['h1', 'h3']) expect(after.get(h)!.Incarnation).toBe(before.get(h)!.Incarnation);
    expect(pings.every((p) => p.sent === 50 && p.received === 50)).toBe(true);
    expect((await watchedDrops())['auth-failed']).toBe(authBefore);
    expect(drops.reduce((n, d) => n + (d['auth-failed'] ?? 0), 0)).toBe(0);
    // h1→h3 did not change key: same epoch and SPI, and its counter went on (it did not restart at 1).
    expect(n13.Epoch).toBe(out13.Epoch);
    expect(n13.SPI).toBe(out13.SPI);
    expect(n13.Sealed).toBeGreaterThanOrEqual(out13.Sealed + 50);
    // The SAs touching h2 started again (their counters are below where they were)...
    expect(n12.Epoch).toBe(out12.Epoch);
    expect(n21.Sealed).toBeLessThan(out21.Sealed);
    expect(n12.Sealed).toBeLessThan(out12.Sealed);
    // ...under new KEYMATs, because h2's incarnation changed; h1→h3's KEYMAT is the same.
    const secret = unwrapForSelf(
      copyOf(await epochCopies(), n21.Epoch, 'h1'),
      { networkId, epoch: n21.Epoch },
      { hostId: 'h1', privateKey: identity(1) },
    );
    expect(secret.ok).toBe(true);
    if (!secret.ok) return;
    // docs/keys.md's formula, written out in the test (test/support/documented-keymat.ts), not src/crypto/.
    const km = (s: string, r: string, inc: Map<string, HostView>) =>
      documentedKeymat(
        secret.secret.exposeDanger(),
        identity(1).exposeDanger(),
        hexToBytes(inc.get(s === 'h1' ? r : s)!.PublicKey),
        {
          networkId,
          vni: networkVni,
          networkIndex: networkIndexOf(n21.SPI),
          epoch: n21.Epoch,
          sender: s,
          receiver: r,
          senderIncarnation: inc.get(s)!.Incarnation,
          receiverIncarnation: inc.get(r)!.Incarnation,
        },
      );
    for (const [s, r] of [
      ['h1', 'h2'],
      ['h2', 'h1'],
    ] as const) {
      const old = km(s, r, before);
      const now = km(s, r, after);
      expect(old.length).toBe(20);
      // Both halves differ: the AES key and the salt (half of the nonce).
      expect(Buffer.from(old.subarray(0, 16)).equals(Buffer.from(now.subarray(0, 16))), `${s}→${r} AES key`).toBe(
        false,
      );
      expect(Buffer.from(old.subarray(16)).equals(Buffer.from(now.subarray(16))), `${s}→${r} salt`).toBe(false);
    }
    expect(km('h1', 'h3', before).equals(km('h1', 'h3', after))).toBe(true);
  }, 180_000);
});

/** ESP-in-UDP datagrams seen on host h's underlay while `traffic` runs. */
async function captureEsp(h: number, traffic: () => Promise<unknown>): Promise<UdpDatagram[]> {
  // The native path sends UDP GSO: on a veth, tcpdump would see a batched send as one super-packet (a ping reply
  // and an ARP frame sealed together, say). Segment in software on every sender so the capture shows datagrams.
  for (const host of cb.bed.hosts)
    await cb.bed.exec(host.netns, ['ethtool', '-K', 'eth0', 'tx-udp-segmentation', 'off']);
  return captureUdp(cb.bed, cb.bed.hosts[h - 1]!.netns, cb.dir, `esp-h${h}`, 'udp port 4500', traffic);
}

/**
 * Opens one ESP-in-UDP payload (docs/wire.md "ESP in UDP") with a KEYMAT: nonce = salt || IV,
 * AAD = SPI || Seq high || Seq low (ESN; the IV is the 64-bit sequence number). Returns the
 * plaintext or null when the ICV does not verify.
 */
function openEsp(payload: Uint8Array, keymat: SecretKey): Buffer | null {
  const p = Buffer.from(payload);
  const k = Buffer.from(keymat.exposeDanger());
  const iv = p.subarray(8, 16);
  const d = createDecipheriv('aes-128-gcm', k.subarray(0, 16), Buffer.concat([k.subarray(16, 20), iv]));
  d.setAAD(Buffer.concat([p.subarray(0, 4), iv.subarray(0, 4), p.subarray(4, 8)]));
  d.setAuthTag(p.subarray(p.length - 16));
  try {
    return Buffer.concat([d.update(p.subarray(16, p.length - 16)), d.final()]);
  } catch {
    return null;
  }
}

/** Every encoding a secret could be stored in as text: hex (both cases), base64, base64 unpadded, base64url. */
function encodings(bytes: Uint8Array): string[] {
  const b = Buffer.from(bytes);
  const hex = b.toString('hex');
  const b64 = b.toString('base64');
  return [hex, hex.toUpperCase(), b64, b64.replace(/=+$/, ''), b.toString('base64url')];
}

describe('etcd holds no usable key', () => {
  let h1Records: KeyEpochRecord[] = [];
  let h1Copies: EtcdCopy[] = [];

  it("host 1's epoch secrets, SA KEYMATs and identity key appear nowhere in etcd, in any encoding, now or in its history", async () => {
    const hosts = await hostsView(1);
    const priv1 = identity(1);
    // The keys host 1 uses, derived like its gateway does, checked against the wire: they open the
    // ESP packets host 1 sends and receives (so the search below looks for the real keys).
    const outbound12 = (await outboundToward(1, 2))!;
    const inbound21 = (await outboundToward(2, 1))!;
    const esp = await captureEsp(1, () => pingCount(1, 2, 5));
    h1Records = await epochRecords();
    h1Copies = await epochCopies();
    const history = (await etcdHistory(cb, '/veil/v1/')).filter((e) => e.type === 'put');
    const historicCopies = parseCopies(history, networkId);
    const needles: Array<{ what: string; bytes: Uint8Array }> = [
      { what: 'h1 identity key', bytes: priv1.exposeDanger() },
    ];
    const secrets = new Map<number, SecretKey>();
    for (const c of [...historicCopies, ...h1Copies]) {
      if (c.hostId !== 'h1') continue;
      const u = unwrapForSelf(c.wrapped, { networkId, epoch: c.epoch }, { hostId: 'h1', privateKey: priv1 });
      if (!u.ok) continue;
      const known = secrets.get(c.epoch);
      if (known) expect(known.equals(u.secret), `every copy of epoch ${c.epoch} for h1 holds one secret`).toBe(true);
      else secrets.set(c.epoch, u.secret);
    }
    // docs/keys.md's formula, written out in the test (test/support/documented-keymat.ts), not src/crypto/:
    // the packets below open under it, so the documentation says what the gateways do.
    const networkIndex = networkIndexOf(outbound12.SPI);
    const keymat = (epoch: number, sender: string, receiver: string): SecretKey => {
      const peer = sender === 'h1' ? receiver : sender;
      return new SecretKey(
        documentedKeymat(
          secrets.get(epoch)!.exposeDanger(),
          priv1.exposeDanger(),
          hexToBytes(hosts.get(peer)!.PublicKey),
          {
            networkId,
            vni: networkVni,
            networkIndex,
            epoch,
            sender,
            receiver,
            senderIncarnation: hosts.get(sender)!.Incarnation,
            receiverIncarnation: hosts.get(receiver)!.Incarnation,
          },
        ),
      );
    };
    for (const [epoch, secret] of secrets) {
      needles.push({ what: `epoch ${epoch} secret`, bytes: secret.exposeDanger() });
      for (const peer of ['h2', 'h3']) {
        for (const [s, r] of [
          ['h1', peer],
          [peer, 'h1'],
        ] as const) {
          const km = keymat(epoch, s, r).exposeDanger();
          needles.push(
            { what: `KEYMAT ${s}→${r} e${epoch}`, bytes: km },
            { what: `AES key ${s}→${r} e${epoch}`, bytes: km.subarray(0, 16) },
          );
        }
      }
    }
    const spiOf = (d: UdpDatagram) => `0x${Buffer.from(d.payload.subarray(0, 4)).toString('hex')}`;
    const sent = esp.filter((d) => d.src === cb.bed.hosts[0]!.underlayAddress && spiOf(d) === outbound12.SPI);
    const received = esp.filter((d) => d.dst === cb.bed.hosts[0]!.underlayAddress && spiOf(d) === inbound21.SPI);
    const opened = (ds: UdpDatagram[], km: SecretKey) =>
      ds
        .map((d) => openEsp(d.payload, km))
        .filter((p): p is Buffer => p !== null && p.at(-1) === 17 && p.readUInt16BE(2) === 4789);
    const sentOpened = opened(sent, keymat(outbound12.Epoch, 'h1', 'h2'));
    const receivedOpened = opened(received, keymat(inbound21.Epoch, 'h2', 'h1'));

    const { kvs } = await etcdGetPrefix(cb, '/veil/v1/');
    const haystacks = [
      ...kvs.map((kv) => ({ key: kv.key, value: kv.value })),
      ...history.map((e) => ({ key: `${e.key}@${e.modRevision}`, value: e.value })),
    ];
    const found: string[] = [];
    for (const n of needles) {
      const texts = encodings(n.bytes);
      for (const h of haystacks) {
        const text = h.value.toString('latin1');
        if (h.value.indexOf(Buffer.from(n.bytes)) >= 0 || texts.some((t) => text.includes(t) || h.key.includes(t)))
          found.push(`${n.what} in ${h.key}`);
      }
    }
    console.log(
      `etcd holds no usable key: ${kvs.length} keys now, ${history.length} puts in history (${historicCopies.length} of wrapped copies); ` +
        `h1 unwrapped ${secrets.size} epochs (${[...secrets.keys()].sort((a, b) => a - b).join(',')}); ${needles.length} secrets × ${encodings(new Uint8Array(1)).length} encodings + raw searched; ` +
        `derived keys verified on the wire: h1→h2 ${outbound12.SPI} e${outbound12.Epoch} ${sentOpened.length}/${sent.length} opened, h2→h1 ${inbound21.SPI} e${inbound21.Epoch} ${receivedOpened.length}/${received.length} opened; found ${found.length}`,
    );
    expect(secrets.size).toBeGreaterThanOrEqual(20);
    for (const r of h1Records) expect(secrets.has(r.epoch)).toBe(true);
    expect(sent.length).toBeGreaterThanOrEqual(5);
    expect(sentOpened.length).toBe(sent.length);
    expect(received.length).toBeGreaterThanOrEqual(5);
    expect(receivedOpened.length).toBe(received.length);
    expect(found).toEqual([]);
  }, 120_000);

  it("a member's key does not open another member's copy", async () => {
    const priv1 = identity(1);
    const priv2 = identity(2);
    expect(h1Records.length).toBeGreaterThan(0);
    expect(h1Records.some((r) => r.state !== 'retired')).toBe(true);
    for (const r of h1Records) {
      const held = h1Copies.filter((c) => c.epoch === r.epoch);
      expect(held.map((c) => c.hostId).sort()).toEqual(r.state === 'retired' ? [] : ['h1', 'h2', 'h3']);
      if (r.state === 'retired') continue;
      const copy1 = copyOf(held, r.epoch, 'h1');
      const copy2 = copyOf(held, r.epoch, 'h2');
      const own1 = unwrapForSelf(copy1, r, { hostId: 'h1', privateKey: priv1 });
      const own2 = unwrapForSelf(copy2, r, { hostId: 'h2', privateKey: priv2 });
      expect(own1.ok && own2.ok && own1.secret.equals(own2.secret)).toBe(true);
      // h1's key on h2's copy: as h2 (the AAD h2 was wrapped with) and as h1 (h2's bytes put where h1's copy goes).
      expect(unwrapForSelf(copy2, r, { hostId: 'h2', privateKey: priv1 })).toEqual({
        ok: false,
        why: 'key-unavailable',
      });
      expect(unwrapForSelf(copy2, r, { hostId: 'h1', privateKey: priv1 })).toEqual({
        ok: false,
        why: 'key-unavailable',
      });
      // And a host with no copy gets nothing.
      expect(unwrapForSelf(copyOf(held, r.epoch, 'h4'), r, { hostId: 'h4', privateKey: priv1 })).toEqual({
        ok: false,
        why: 'not-member',
      });
    }
    console.log(
      `non-member: h1's key opened none of h2's copies of ${h1Records.length} live epochs (${h1Records.map((r) => `${r.epoch}:${r.state}`).join(', ')})`,
    );
  }, 30_000);
});
