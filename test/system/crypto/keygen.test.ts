// X25519 key generation under garbage collection (src/crypto/x25519.ts): Node 20 could deadlock
// exporting a freshly generated key as JWK when a collection during the export freed the generating
// job. A deadlocked process never returns, so the loop runs in a child process with a deadline.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const MODULE = resolve(import.meta.dirname, '../../../dist/src/crypto/x25519.js');
const PAIRS = 60_000;

// The leader's pattern: a key pair per wrap, objects made and dropped between them, the public key
// read again now and then.
const LOOP = `
  const { generateX25519KeyPair, x25519 } = await import(${JSON.stringify(MODULE)});
  const garbage = [];
  for (let i = 0; i < ${PAIRS}; i++) {
    const pair = generateX25519KeyPair();
    if (i % 50 === 0 && x25519.publicKey(pair.privateKey).length !== 32) throw new Error('public key');
    garbage.push({ values: new Array(20).fill(i) });
    if (garbage.length > 5000) garbage.length = 0;
  }
  console.log('done');
`;

describe('X25519 key generation', () => {
  it(`${PAIRS} node:crypto key pairs, with garbage collections among them, never hang`, async () => {
    expect(existsSync(MODULE), 'dist/ is missing: run `npm run build` (npm test does)').toBe(true);
    const result = await new Promise<{ code: number | null; signal: string | null; stdout: string }>((done) => {
      // With the JWK export this replaced, the loop hung in 3 of 4 runs on the development machine.
      const child = execFile(
        process.execPath,
        ['--input-type=module', '-e', LOOP],
        { timeout: 45_000, killSignal: 'SIGKILL' },
        (err, stdout) => done({ code: child.exitCode, signal: child.signalCode ?? (err ? 'error' : null), stdout }),
      );
    });
    expect(result, 'the key generation loop hung (killed at its deadline) or failed').toMatchObject({
      code: 0,
      stdout: 'done\n',
    });
  }, 60_000);
});
