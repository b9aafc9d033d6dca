// `veil vectors check` as a built command: the same result, and exit 0.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { VECTORS_DIR } from '../../support/vectors.js';

const ESP_FILE = join(VECTORS_DIR, 'esp/scapy_esp_in_udp_aes_gcm.json');
const CLI = resolve(import.meta.dirname, '../../../dist/src/cli/veil.js');

describe('veil vectors check (the built command)', () => {
  it('the built command prints the same and exits 0 (npm test builds it first)', async () => {
    expect(existsSync(CLI), 'dist/ is missing: run `npm run build` (npm test does)').toBe(true);
    const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'vectors', 'check', ESP_FILE]);
    expect(stdout.trim().split('\n').at(-1)).toBe('28 passed, 0 failed');
  });
});
