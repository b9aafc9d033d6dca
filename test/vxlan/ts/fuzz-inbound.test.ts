import { expect, it } from 'vitest';
import { bytesToHex, concatBytes, writeU32 } from '../../../src/crypto/bytes.js';
import { IPPROTO_UDP, VXLAN_PORT } from '../../../src/vxlan/wire/constants.js';
import { DropCounters, type DropReason } from '../../../src/vxlan/wire/drops.js';
import { encodeEspPlaintext, ivFromSequence, sealEspDanger } from '../../../src/vxlan/wire/esp.js';
import { processInbound } from '../../../src/vxlan/ts/inbound.js';
import { sealOutbound } from '../../../src/vxlan/ts/outbound.js';
import { encodeUdpHeader } from '../../../src/vxlan/wire/udp.js';
import { saPair, vxlanDatagram } from '../../support/esp-fixtures.js';
import { FUZZ_DATAGRAMS, FUZZ_SEED } from '../../support/fuzz.js';
import { Prng } from '../../support/prng.js';

const DATAGRAMS = FUZZ_DATAGRAMS;
const SEED = FUZZ_SEED;

type Mutation =
  | 'genuine'
  | 'random-bytes'
  | 'truncated'
  | 'bit-flip'
  | 'wrong-spi'
  | 'replay'
  | 'bad-padding'
  | 'bad-pad-length'
  | 'bad-next-header'
  | 'other-vni'
  | 'keepalive'
  | 'extended';

// Weighted so that every mutation occurs thousands of times in 100,000 (tens of thousands in CI's million).
const PLAN: Array<[Mutation, number]> = [
  ['genuine', 10],
  ['random-bytes', 14],
  ['truncated', 12],
  ['bit-flip', 16],
  ['wrong-spi', 10],
  ['replay', 10],
  ['bad-padding', 6],
  ['bad-pad-length', 5],
  ['bad-next-header', 6],
  ['other-vni', 5],
  ['keepalive', 2],
  ['extended', 4],
];
const WHEEL = PLAN.flatMap(([m, w]) => Array<Mutation>(w).fill(m));

it(`fuzz: ${DATAGRAMS} random and mutated datagrams never throw, never deliver what the SA did not seal, and every drop is counted`, () => {
  const rng = new Prng(SEED);
  console.log(`fuzz seed ${SEED} (rerun with VEIL_FUZZ_SEED=${SEED})`);
  const netA = saPair(0x1_0001, 100);
  const netB = saPair(0x1_0002, 200); // a second network's SA on the same receiver
  const sas = { inbound: (spi: number) => [netA.inbound, netB.inbound].find((sa) => sa.spi === spi) };

  const sealedByA = new Map<string, number>(); // genuine VXLAN datagrams, hex → times delivered
  const recent: Uint8Array[] = []; // genuine ESP datagrams, for replays and mutations
  const drops = new DropCounters();
  const byMutation = new Map<Mutation, number>();
  let delivered = 0;
  let genuineMade = 0;

  const sealA = (): Uint8Array => {
    const vxlan = vxlanDatagram(100, rng.bytes(14 + rng.int(200)));
    const r = sealOutbound(vxlan, 1 + rng.int(65535), netA.outbound);
    if (!r.ok) throw new Error(`seal failed: ${r.drop}`);
    sealedByA.set(bytesToHex(vxlan), 0);
    return r.datagram;
  };
  const genuine = (): Uint8Array => {
    const datagram = sealA();
    genuineMade++;
    recent.push(datagram);
    if (recent.length > 256) recent.shift();
    return datagram;
  };
  // Malformed but authentic: sealed with SA A's key at the SA's next sequence number.
  const authentic = (plaintext: Uint8Array): Uint8Array => {
    const seq = netA.outbound.counter.next();
    const hi = Math.floor(seq / 2 ** 32);
    return sealEspDanger(netA.outbound.cipher, hi, seq >>> 0, ivFromSequence(hi, seq >>> 0), plaintext);
  };
  const innerA = () => concatBytes(encodeUdpHeader(7, VXLAN_PORT, 8 + 40), vxlanDatagram(100, rng.bytes(40)));
  // A replay of a genuine datagram already sent; before the first one, a genuine datagram (delivered, counted).
  const old = () => recent[rng.int(recent.length)] ?? genuine();
  // Half the mutations start from a packet already delivered (the window stops them),
  // half from a fresh one never sent (only the ICV can stop them). Either way it is not counted
  // as genuine: it is mutated, never delivered (before the first genuine one, a fresh one it is).
  const base = () => (rng.int(2) ? (recent[rng.int(recent.length)] ?? sealA()) : sealA());

  const make: Record<Mutation, () => Uint8Array> = {
    genuine,
    'random-bytes': () => rng.bytes(rng.int(1600)),
    truncated: () => {
      const d = base();
      return d.subarray(0, rng.int(d.length));
    },
    'bit-flip': () => {
      const d = Uint8Array.from(base());
      // 1 to 3 flips at distinct offsets, so they never cancel out into the genuine packet.
      const first = rng.int(d.length);
      for (let n = 1 + rng.int(3), i = 0; i < n; i++) d[(first + i * 7) % d.length]! ^= 1 << rng.int(8);
      return d;
    },
    'wrong-spi': () => {
      const d = Uint8Array.from(base());
      writeU32(d, 0, rng.pick([0x1_0002, 0x1_0003, rng.u32() || 1]));
      return d;
    },
    replay: old,
    'bad-padding': () => {
      const pt = encodeEspPlaintext(concatBytes(innerA(), Uint8Array.of(0)), IPPROTO_UDP); // 3 pad bytes
      pt[pt.length - 3]! ^= 0x40;
      return authentic(pt);
    },
    'bad-pad-length': () => {
      const pt = encodeEspPlaintext(innerA(), IPPROTO_UDP);
      pt[pt.length - 2] = 200 + rng.int(56);
      return authentic(pt);
    },
    'bad-next-header': () => authentic(encodeEspPlaintext(innerA(), rng.pick([0, 4, 6, 41, 50, 255]))),
    'other-vni': () =>
      authentic(
        encodeEspPlaintext(
          concatBytes(encodeUdpHeader(7, VXLAN_PORT, 48), vxlanDatagram(200, rng.bytes(40))),
          IPPROTO_UDP,
        ),
      ),
    keepalive: () => (rng.int(2) ? Uint8Array.of(0xff) : new Uint8Array(4 + rng.int(40))),
    extended: () => concatBytes(base(), rng.bytes(1 + rng.int(32))),
  };

  for (let i = 0; i < DATAGRAMS; i++) {
    const mutation = WHEEL[rng.int(WHEEL.length)]!;
    byMutation.set(mutation, (byMutation.get(mutation) ?? 0) + 1);
    const result = processInbound(make[mutation](), sas); // a throw fails the test
    if (result.ok) {
      const key = bytesToHex(result.vxlan);
      const times = sealedByA.get(key);
      expect(times, 'delivered a datagram SA A never sealed').toBe(0);
      expect(result.sa).toBe(netA.inbound);
      sealedByA.set(key, 1);
      delivered++;
    } else {
      drops.count(result.drop);
    }
  }

  const counted = drops.snapshot();
  console.log(`fuzz: ${DATAGRAMS} datagrams, ${delivered} delivered, drops ${JSON.stringify(counted)}`);
  console.log(`fuzz: mutations ${JSON.stringify(Object.fromEntries(byMutation))}`);
  expect(delivered + drops.total()).toBe(DATAGRAMS);
  // Every genuine datagram arrives exactly once: nothing the fuzzer did displaced it.
  expect(delivered).toBe(genuineMade);
  const expected: DropReason[] = [
    'nat-keepalive',
    'non-esp-marker',
    'truncated',
    'unknown-spi',
    'replay-duplicate',
    'auth-failed',
    'bad-padding',
    'bad-pad-length',
    'bad-next-header',
    'vni-mismatch',
  ];
  for (const reason of expected) expect(counted[reason] ?? 0, reason).toBeGreaterThan(0);
}, 600_000);
