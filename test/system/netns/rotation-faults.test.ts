// Key rotation under faults (docs/keys.md "Rotation"), three etcd members, three `veil gateway`s:
// the schedule leader killed between publish and activate, one etcd member down, etcd down
// entirely. Real etcd, real packets.
import { beforeAll, describe, expect, it } from 'vitest';
import { bytesToHex, hexToBytes } from '../../../src/crypto/bytes.js';
import { SecretKey } from '../../../src/crypto/secret.js';
import { generateX25519KeyPair } from '../../../src/crypto/x25519.js';
import { unwrapForSelf } from '../../../src/keyrotation/wrapping.js';
import type { KeyEpochRecord } from '../../../src/store/types.js';
import { waitFor } from '../../support/wait.js';
import {
  ETCD_ADDRESS,
  copiesPrefix,
  createClusterBed,
  encryptedNetworkWithContainers,
  etcdHistory,
  etcdRaftLeader,
  gatewayDrops,
  hostIdentityHex,
  keysOf,
  outboundEpoch,
  parseCopies,
  pingLoop,
  type ClusterBed,
  type KeysView,
} from './cluster-bed.js';
import { cleanUpClusterBed } from './cluster-hooks.js';

const NET = 'flt';
const HOSTS = [1, 2, 3] as const;

let cb: ClusterBed;
let networkId = '';
const c: Record<number, { ns: string; netns: string; ip: string }> = {};

beforeAll(async () => {
  cb = await createClusterBed({ hosts: 3, etcdMembers: 3 });
  const made = await encryptedNetworkWithContainers(cb, {
    name: NET,
    subnet: '10.67.0.0/24',
    label: 'flt',
    hosts: HOSTS,
  });
  networkId = made.networkId;
  Object.assign(c, made.containers);
}, 180_000);
cleanUpClusterBed(() => cb);

const running = (): number[] => HOSTS.filter((h) => cb.gateways.has(h));

/** GET keys on every running host. */
async function views(): Promise<Map<number, KeysView>> {
  return new Map(await Promise.all(running().map(async (h) => [h, await keysOf(cb, h, NET)] as const)));
}

/** Waits until every running host seals with an epoch ≥ target; returns the epochs. */
async function allOutbound(target: number, timeoutMs: number, what: string): Promise<number[]> {
  return waitFor(
    async () => {
      const e = [...(await views()).values()].map((v) => outboundEpoch(v) ?? 0);
      return e.every((x) => x >= target) ? e : undefined;
    },
    timeoutMs,
    what,
  );
}

/** POST rotate on `via` (retried while etcd settles), then every running host outbound on the new epoch. */
async function forcedRotation(via: number, timeoutMs = 60_000): Promise<{ target: number; ms: number }> {
  const t0 = performance.now();
  const r = await waitFor(
    async () => {
      const a = await cb.api(via, 'POST', `/networks/${NET}/rotate`);
      return a.status === 202 ? a : undefined;
    },
    20_000,
    `POST rotate accepted on h${via}`,
  );
  const target = (r.body.AfterEpoch as number) + 1;
  await allOutbound(target, timeoutMs, `every host outbound on epoch ${target}`);
  return { target, ms: performance.now() - t0 };
}

/** The schedule leader among running hosts (exactly one says ScheduleLeader). */
async function scheduleLeader(timeoutMs: number, not?: number): Promise<number> {
  return waitFor(
    async () => {
      const leaders = [...(await views()).entries()].filter(([, v]) => v.ScheduleLeader).map(([h]) => h);
      return leaders.length === 1 && leaders[0] !== not ? leaders[0] : undefined;
    },
    timeoutMs,
    `one key-schedule leader${not ? ` other than h${not}` : ''}`,
  );
}

/**
 * A host record put into etcd by hand under its own lease: to the schedule a live member that never
 * acks (a hung gateway). (cluster-bed.ts registerFakeHost does the same but its etcdctl txn input
 * lacks the final empty line of the failure section, so etcdctl fails with "Error: EOF"; index 9 is
 * free in this bed, so a plain put claims it.)
 */
async function fakeMember(id: string, index: number, publicKeyHex: string): Promise<{ revoke(): Promise<void> }> {
  const lease = /lease ([0-9a-f]+) granted/.exec(await cb.etcdctl(['lease', 'grant', '300']))?.[1];
  if (!lease) throw new Error('etcdctl lease grant');
  await cb.etcdctl(['put', `/veil/v1/hostindex/${index}`, id]);
  const record = {
    id,
    index,
    address: `198.18.0.${200 + index}`,
    os: 'linux',
    arch: 'x64',
    version: 'fake',
    publicKey: publicKeyHex,
    incarnation: 'f'.repeat(16),
  };
  await cb.etcdctl(['put', `--lease=${lease}`, `/veil/v1/hosts/${id}`, JSON.stringify(record)]);
  return { revoke: async () => void (await cb.etcdctl(['lease', 'revoke', lease])) };
}

/**
 * Every epoch number was published once, in sequence 1..n, and every copy of it (rewraps included)
 * holds one secret: read from etcd's whole history of keys/<network>/ and ~/copies/<network>/ (no
 * compaction in the bed), each copy opened with its host's key. A host whose lease its client gave up
 * during an outage is re-registering, not a member, when the epoch after it is published, so it may
 * hold no copy of that one (docs/etcd.md "Leases").
 */
async function checkEpochSequence(when: string): Promise<void> {
  const history = (await etcdHistory(cb, `/veil/v1/keys/${networkId}/`)).filter((e) => e.type === 'put');
  const hostKeys = [1, 2, 3].map((i) => ({
    hostId: `h${i}`,
    privateKey: new SecretKey(hexToBytes(hostIdentityHex(cb, i))),
  }));
  const byEpoch = new Map<number, KeyEpochRecord[]>();
  for (const ev of history) {
    const rec = JSON.parse(ev.value.toString('utf8')) as KeyEpochRecord;
    byEpoch.set(rec.epoch, [...(byEpoch.get(rec.epoch) ?? []), rec]);
  }
  const copies = parseCopies(
    (await etcdHistory(cb, copiesPrefix(networkId))).filter((e) => e.type === 'put'),
    networkId,
  );
  const numbers = [...byEpoch.keys()].sort((a, b) => a - b);
  const summary: string[] = [];
  for (const [epoch, recs] of byEpoch) {
    expect(new Set(recs.map((r) => r.publishedAt)).size, `epoch ${epoch} published once`).toBe(1);
    const secrets = copies
      .filter((c) => c.epoch === epoch)
      .map((c) =>
        unwrapForSelf(
          c.wrapped,
          { networkId, epoch },
          hostKeys.find((k) => k.hostId === c.hostId)!,
        ),
      )
      .filter((u) => u.ok)
      .map((u) => (u.ok ? bytesToHex(u.secret.exposeDanger()) : ''));
    expect(new Set(secrets).size, `epoch ${epoch}: one secret`).toBe(1);
    summary.push(`${epoch}×${recs.length}`);
  }
  console.log(`${when}: epoch records in etcd history (epoch×puts): ${summary.join(' ')}`);
  expect(numbers.length).toBeGreaterThan(0);
  expect(numbers).toEqual(Array.from({ length: numbers.length }, (_, i) => i + 1));
}

describe('the schedule leader killed between publish and activate', () => {
  /*
   * How activation is held open: a fake member (a host record under its own etcd lease, no
   * gateway: a hung host) never acks, so the leader may activate a published epoch only at the
   * ack timeout (--key-grace, 2 s in the bed) after its copy was wrapped. The next epoch waits
   * published ahead (the standby, docs/keys.md "Rotation"): the test SIGKILLs the leader while it
   * does, then asks for the rotation, and checks that an epoch newer than the current one was
   * activated after the kill (so by someone else), by a host that then says it leads. The killed
   * host drops out once its lease expires, so the successor may replace the standby first.
   */
  it('another host takes over and activates the next epoch; epoch numbers stay one sequence', async () => {
    const leader = await scheduleLeader(30_000);
    const others = running().filter((h) => h !== leader);
    const fake = generateX25519KeyPair();
    const hung = await fakeMember('h9', 9, bytesToHex(fake.publicKey));
    try {
      // The live epochs are rewrapped for the new member first: the standby then waits for its ack.
      const standby = await waitFor(
        async () => {
          const { Epochs } = await keysOf(cb, others[0]!, NET);
          const next = Epochs.find((e) => e.State === 'published' && e.Members.includes('h9'));
          return Epochs.some((e) => e.State === 'active' && e.Members.includes('h9')) ? next : undefined;
        },
        20_000,
        'the active epoch and the standby wrapped for h9',
      );
      await cb.stopGateway(leader, 'SIGKILL');
      const killedAt = Date.now();
      const r = await cb.api(others[0]!, 'POST', `/networks/${NET}/rotate`);
      expect(r.status).toBe(202);
      const target = (r.body.AfterEpoch as number) + 1;
      expect(target, 'the standby is the next epoch').toBe(standby.Epoch);

      const t0 = performance.now();
      const successor = await scheduleLeader(30_000, leader);
      const takeoverMs = performance.now() - t0;
      const epoch = Math.min(...(await allOutbound(target, 30_000, `survivors outbound on epoch ${target} or later`)));
      const rec = (await keysOf(cb, successor, NET)).Epochs.find((e) => e.Epoch === epoch)!;
      const activatedMs = Date.parse(rec.ActivatedAt!);
      console.log(
        `leader h${leader} SIGKILLed with epoch ${target} published (${standby.PublishedAt}); h${successor} leads after ${takeoverMs.toFixed(0)} ms; ` +
          `epoch ${epoch} activated ${activatedMs - killedAt} ms after the kill, members ${rec.Members.join(',')}, acked ${rec.Acked.join(',')}`,
      );
      expect(successor).not.toBe(leader);
      expect(rec.State).toBe('active');
      expect(activatedMs).toBeGreaterThan(killedAt);
    } finally {
      await hung.revoke();
    }
    // The killed gateway comes back and catches up.
    await cb.startGateway(leader);
    const now = Math.max(
      ...[...(await views()).values()].map((v) =>
        Math.max(...v.Epochs.filter((e) => e.State === 'active').map((e) => e.Epoch)),
      ),
    );
    await allOutbound(now, 30_000, 'the restarted gateway outbound on the current epoch');

    await checkEpochSequence('after the leader kill');
  }, 180_000);
});

describe('etcd degraded', () => {
  it('with one etcd member stopped (the raft leader), a forced rotation completes', async () => {
    const member = await etcdRaftLeader(cb);
    await cb.etcd.stopMember(member);
    try {
      const r = await forcedRotation(2, 60_000);
      console.log(
        `etcd member ${member} (raft leader) stopped: forced rotation to epoch ${r.target} on every host in ${r.ms.toFixed(0)} ms`,
      );
    } finally {
      await cb.etcd.startMember(member);
    }
    const back = await forcedRotation(3, 60_000);
    console.log(`member ${member} back: forced rotation to epoch ${back.target} in ${back.ms.toFixed(0)} ms`);
  }, 180_000);

  it('one host cut off from etcd for three lease TTLs keeps its traffic (its peers keep it while its packets arrive); it registers again and rotation resumes', async () => {
    const cut = cb.bed.hosts[1]!; // h2
    const dropsBefore = await Promise.all(running().map((h) => gatewayDrops(cb, h)));
    const toH2 = pingLoop(cb, c[1]!.ns, c[2]!.ip, { interval: '0.01', perRun: 200, waitS: 2 });
    const fromH2 = pingLoop(cb, c[2]!.ns, c[3]!.ip, { interval: '0.01', perRun: 200, waitS: 2 });
    const table = 'inet veil_test_cut';
    const nft = (script: string) => cb.bed.exec(cut.netns, ['nft', script]);
    let peersDuring: string[][];
    try {
      await new Promise((r) => setTimeout(r, 1_000));
      // h2 reaches neither etcd nor is reached by it; the underlay between the hosts stays up.
      await nft(
        [
          `add table ${table}`,
          `add chain ${table} out { type filter hook output priority 0; policy accept; }`,
          `add chain ${table} in { type filter hook input priority 0; policy accept; }`,
          `add rule ${table} out ip daddr ${ETCD_ADDRESS} drop`,
          `add rule ${table} in ip saddr ${ETCD_ADDRESS} drop`,
        ].join('\n'),
      );
      // Its record expires after one TTL (4 s): wait until the others no longer list it, then two TTLs more.
      await waitFor(
        async () => {
          const hosts = (await cb.api(1, 'GET', '/hosts')).body as Array<{ Id: string }>;
          return !hosts.some((h) => h.Id === 'h2');
        },
        30_000,
        'h2 gone from etcd as h1 sees it',
      );
      await new Promise((r) => setTimeout(r, 8_000));
      peersDuring = await Promise.all(
        [1, 3].map(async (h) =>
          ((await cb.api(h, 'GET', '/status')).body.peers as Array<{ id: string }>).map((p) => p.id),
        ),
      );
    } finally {
      await cb.bed.exec(cut.netns, ['nft', 'delete', 'table', ...table.split(' ')], { allowFail: true });
    }
    // Back: h2 registers again (a new lease), and a forced rotation reaches all three hosts.
    await waitFor(
      async () => ((await cb.api(1, 'GET', '/hosts')).body as Array<{ Id: string }>).some((h) => h.Id === 'h2'),
      60_000,
      'h2 registered again',
    );
    const [p12, p23] = await Promise.all([toH2.stop(), fromH2.stop()]);
    const dropsAfter = await Promise.all(running().map((h) => gatewayDrops(cb, h)));
    console.log(
      `h2 cut off from etcd: peers of h1 and h3 meanwhile ${JSON.stringify(peersDuring)}; ping h1→h2 ${p12.received}/${p12.transmitted}, ` +
        `h2→h3 ${p23.received}/${p23.transmitted}; drops before ${JSON.stringify(dropsBefore)} after ${JSON.stringify(dropsAfter)}`,
    );
    expect(peersDuring).toEqual([expect.arrayContaining(['h2']), expect.arrayContaining(['h2'])]);
    expect(p12.transmitted).toBeGreaterThan(500);
    expect(p12.received).toBe(p12.transmitted);
    expect(p23.received).toBe(p23.transmitted);
    const r = await forcedRotation(2, 60_000);
    console.log(
      `after the cut: forced rotation to epoch ${r.target} on every host (h2 included) in ${r.ms.toFixed(0)} ms`,
    );
    await checkEpochSequence('after the cut');
  }, 240_000);

  it('with every etcd member stopped, traffic keeps flowing and the API says rotation waits for etcd; after a restart a forced rotation completes', async () => {
    const dropsBefore = await Promise.all(running().map((h) => gatewayDrops(cb, h)));
    const flood = pingLoop(cb, c[1]!.ns, c[2]!.ip, { interval: '0.005', perRun: 400, waitS: 2 });
    const flood2 = pingLoop(cb, c[3]!.ns, c[1]!.ip, { interval: '0.005', perRun: 400, waitS: 2 });
    let during: Array<{ host: number; status: number; reachable: unknown; waiting: unknown }>;
    let outage: number;
    try {
      await new Promise((r) => setTimeout(r, 1_000));
      const t0 = performance.now();
      await Promise.all([0, 1, 2].map((i) => cb.etcd.stopMember(i)));
      // The gateways notice (a failed call or a broken watch), then report it.
      during = await waitFor(
        async () => {
          const v = await Promise.all(
            running().map(async (h) => {
              const r = await cb.api(h, 'GET', `/networks/${NET}/keys`);
              return { host: h, status: r.status, reachable: r.body?.StoreReachable, waiting: r.body?.Waiting };
            }),
          );
          return v.every((x) => x.status === 200 && x.reachable === false && /etcd/.test(String(x.waiting)))
            ? v
            : undefined;
        },
        20_000,
        'GET keys: StoreReachable false, Waiting mentions etcd, on every host',
      ).catch((err: Error) => {
        console.log(`etcd down: ${err.message}`);
        return [];
      });
      if (during.length === 0) {
        during = await Promise.all(
          running().map(async (h) => {
            const r = await cb.api(h, 'GET', `/networks/${NET}/keys`);
            return {
              host: h,
              status: r.status,
              reachable: r.body?.StoreReachable,
              waiting: r.body?.Waiting ?? r.body?.message,
            };
          }),
        );
      }
      const left = 6_000 - (performance.now() - t0);
      if (left > 0) await new Promise((r) => setTimeout(r, left));
      outage = performance.now() - t0;
    } finally {
      await Promise.all([0, 1, 2].map((i) => cb.etcd.startMember(i)));
    }
    const [p1, p2] = await Promise.all([flood.stop(), flood2.stop()]);
    const dropsAfter = await Promise.all(running().map((h) => gatewayDrops(cb, h)));
    console.log(
      `etcd down ${outage.toFixed(0)} ms: ping h1→h2 ${p1.received}/${p1.transmitted}, h3→h1 ${p2.received}/${p2.transmitted}; ` +
        `keys during the outage ${JSON.stringify(during)}; drops before ${JSON.stringify(dropsBefore)} after ${JSON.stringify(dropsAfter)}`,
    );
    expect(p1.transmitted).toBeGreaterThan(800);
    expect(p1.received).toBe(p1.transmitted);
    expect(p2.received).toBe(p2.transmitted);
    for (const d of during) {
      expect(d.status).toBe(200);
      expect(d.reachable).toBe(false);
      expect(String(d.waiting)).toMatch(/etcd/);
    }
    expect(during.length).toBe(3);
    // etcd back: the gateways say so, and a forced rotation completes.
    await waitFor(
      async () => [...(await views()).values()].every((v) => v.StoreReachable),
      30_000,
      'StoreReachable again on every host',
    );
    const r = await forcedRotation(1, 60_000);
    console.log(`after the etcd restart: forced rotation to epoch ${r.target} on every host in ${r.ms.toFixed(0)} ms`);
    await checkEpochSequence('end of run');
    // A clean stop after the outage ends the process by itself (the outage leaves etcd client timers
    // behind): never the SIGKILL the bed sends after 10 s.
    const stopping = cb.gateways.get(2)!;
    await cb.stopGateway(2, 'SIGTERM');
    expect(stopping.child.signalCode).toBeNull();
    expect(stopping.child.exitCode).toBe(0);
    await cb.startGateway(2);
  }, 240_000);
});
