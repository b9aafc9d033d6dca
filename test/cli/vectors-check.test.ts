import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { vectorsCheck } from '../../src/cli/vectors-check.js';
import { VECTORS_DIR } from '../support/vectors.js';

const ESP_FILE = join(VECTORS_DIR, 'esp/scapy_esp_in_udp_aes_gcm.json');
const dir = mkdtempSync(join(tmpdir(), 'veil-vectors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function check(path: string) {
  const lines: string[] = [];
  const code = await vectorsCheck(path, (l) => lines.push(l));
  return { code, lines };
}

describe('veil vectors check', () => {
  it('passes all 28 scapy ESP vectors on every implementation', async () => {
    const { code, lines } = await check(ESP_FILE);
    expect(lines.at(-1)).toBe('28 passed, 0 failed');
    expect(code).toBe(0);
  });

  it('reports each tampered case and exits 1', async () => {
    const file = JSON.parse(readFileSync(ESP_FILE, 'utf8'));
    // tcId 1: one ciphertext bit; tcId 2: the sequence number the sealer must use.
    file.tests[0].esp =
      file.tests[0].esp.slice(0, 40) + (file.tests[0].esp[40] === '0' ? '1' : '0') + file.tests[0].esp.slice(41);
    file.tests[1].seqLo += 1;
    const path = join(dir, 'tampered.json');
    writeFileSync(path, JSON.stringify(file));
    const { code, lines } = await check(path);
    expect(lines.at(-1)).toBe('26 passed, 2 failed');
    expect(lines.filter((l) => l.startsWith('FAIL tcId 1:')).length).toBeGreaterThan(0);
    expect(lines.filter((l) => l.startsWith('FAIL tcId 2:')).length).toBeGreaterThan(0);
    expect(code).toBe(1);
  });

  it('names the problem in a file that is not an ESP vector file', async () => {
    const path = join(dir, 'bad.json');
    writeFileSync(path, JSON.stringify({ tests: [{ tcId: 1, keymat: 5 }] }));
    const { code, lines } = await check(path);
    expect(lines.join('\n')).toMatch(/tests\[0\]: field "keymat" must be a string/);
    expect(code).toBe(2);
    expect((await check(join(dir, 'missing.json'))).code).toBe(2);
  });
});
