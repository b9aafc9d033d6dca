// The one error registry is complete: every VEIL_ERR_* code the TypeScript or the C code can raise is
// declared in src/errors.ts with an HTTP status, and nothing is declared that nothing raises.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../src/errors.js';

const ROOT = join(import.meta.dirname, '..');

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (name === 'build' || name === 'node_modules') continue;
    if (statSync(path).isDirectory()) sources(path, out);
    else if (/\.(ts|c|h)$/.test(name)) out.push(path);
  }
  return out;
}

function codesIn(files: string[]): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const file of files) {
    for (const [code] of readFileSync(file, 'utf8').matchAll(/VEIL_ERR_[A-Z0-9_]*[A-Z0-9]/g)) {
      const where = found.get(code) ?? [];
      if (!where.includes(file)) where.push(file);
      found.set(code, where);
    }
  }
  return found;
}

describe('the error registry (src/errors.ts)', () => {
  const registry = join(ROOT, 'src', 'errors.ts');
  const used = codesIn([...sources(join(ROOT, 'src')), ...sources(join(ROOT, 'native'))].filter((f) => f !== registry));

  it('declares every code src/ and native/ can raise', () => {
    const missing = [...used]
      .filter(([code]) => !(code in ERRORS))
      .map(([code, files]) => `${code} (${files.map((f) => f.slice(ROOT.length + 1)).join(', ')})`);
    expect(missing).toEqual([]);
    expect(used.size).toBeGreaterThan(20);
  });

  it('declares nothing that no code raises', () => {
    expect(Object.keys(ERRORS).filter((code) => !used.has(code))).toEqual([]);
  });

  it('gives each code an HTTP error status and a message', () => {
    for (const [code, { status, message }] of Object.entries(ERRORS)) {
      expect(status >= 400 && status <= 599, code).toBe(true);
      expect(message.length, code).toBeGreaterThan(0);
    }
  });
});
