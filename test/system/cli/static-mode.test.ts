// `veil gateway --config` (static mode) is refused, saying why: a file with fixed keys and a fixed
// incarnation could start twice and reuse GCM nonces (docs/operations.md "Static mode").
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const CLI = resolve(import.meta.dirname, '../../../dist/src/cli/veil.js');

it('refuses --config with exit 2 and the reason, before touching anything', async () => {
  const run = await promisify(execFile)(process.execPath, [CLI, 'gateway', '--config', '/nonexistent/h1.json']).then(
    () => ({ code: 0, stderr: '' }),
    (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
  );
  expect(run.code).toBe(2);
  expect(run.stderr).toMatch(/static mode\) is gone: .*reuse GCM nonces\. Run cluster mode/);
});
