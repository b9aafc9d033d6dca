// bench/crypto: per-packet ESP seal and open of 1400-byte frames, per AEAD
// implementation, against `openssl speed` measured in the same run.
// Prints packets/s and the ratio to OpenSSL; asserts nothing (numbers vary by machine).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { AeadProvider } from '../src/crypto/aead.js';
import { nobleAeadProvider } from '../src/crypto/aead-noble.js';
import { nodeAeadProvider } from '../src/crypto/aead-node.js';
import { SecretKey } from '../src/crypto/secret.js';
import { IPPROTO_UDP } from '../src/vxlan/wire/constants.js';
import { createEspCipher, openEspDanger, parseEspPlaintext } from '../src/vxlan/wire/esp.js';
import { OutboundSa } from '../src/vxlan/sa/sa.js';

const FRAME = 1400;
const SECONDS = Number(process.env.VEIL_BENCH_SECONDS ?? 2);

/** Runs `op` in batches until `seconds` have passed; returns operations per second. */
function rate(op: () => void, seconds = SECONDS): number {
  for (let i = 0; i < 200; i++) op(); // warm up the JIT
  let n = 0;
  const start = process.hrtime.bigint();
  const budget = BigInt(Math.round(seconds * 1e9));
  let elapsed = 0n;
  while (elapsed < budget) {
    for (let i = 0; i < 100; i++) op();
    n += 100;
    elapsed = process.hrtime.bigint() - start;
  }
  return n / (Number(elapsed) / 1e9);
}

function opensslPacketsPerSecond(): number {
  const out = execFileSync(
    'openssl',
    ['speed', '-mr', '-evp', 'aes-128-gcm', '-bytes', String(FRAME), '-seconds', String(SECONDS)],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  // "+F:<n>:AES-128-GCM:<bytes per second>" (machine-readable mode, one figure per -bytes size)
  const m = /^\+F:\d+:[^:]+:([\d.]+)$/m.exec(out);
  if (!m) throw new Error(`cannot parse openssl speed output:\n${out}`);
  return Number(m[1]) / FRAME;
}

function measure(provider: AeadProvider) {
  const keymat = new SecretKey(randomBytes(20));
  const cipher = createEspCipher(0x1234, keymat, true, provider);
  const sa = new OutboundSa(cipher, 42);
  const payload = randomBytes(FRAME);
  const seal = rate(() => {
    sa.seal(payload, IPPROTO_UDP);
  });
  const sealed = sa.seal(payload, IPPROTO_UDP);
  if (!sealed.ok) throw new Error('seal failed');
  const open = rate(() => {
    const pt = openEspDanger(cipher, sealed.datagram, 0);
    if (!pt || !parseEspPlaintext(pt).ok) throw new Error('open failed');
  });
  return { seal, open };
}

const fmt = (pps: number) =>
  `${Math.round(pps).toLocaleString('en-US').padStart(11)} pkt/s ${((pps * FRAME * 8) / 1e9).toFixed(2).padStart(6)} Gbit/s`;

const reference = opensslPacketsPerSecond();
console.log(`bench/crypto: AES-128-GCM, ${FRAME}-byte frames, ${SECONDS} s per figure, node ${process.version}`);
console.log(`reference  openssl speed -evp aes-128-gcm -bytes ${FRAME}   ${fmt(reference)}`);
for (const provider of [nodeAeadProvider, nobleAeadProvider]) {
  const { seal, open } = measure(provider);
  console.log(`${provider.name.padEnd(6)} ESP seal   ${fmt(seal)}   ratio to openssl ${(seal / reference).toFixed(3)}`);
  console.log(`${provider.name.padEnd(6)} ESP open   ${fmt(open)}   ratio to openssl ${(open / reference).toFixed(3)}`);
}
