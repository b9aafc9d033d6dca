// The addon is loaded from veil's own install only: a gateway runs as root, and the directory it was
// started from (perhaps a user's) must never supply the code it loads.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { nativeAddonPath, packageRoot } from '../../../src/vxlan/native/addon.js';

const root = mkdtempSync(join(tmpdir(), 'veil-addon-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function tree(manifest: object | undefined): string {
  const base = mkdtempSync(join(root, 'pkg-'));
  if (manifest) writeFileSync(join(base, 'package.json'), JSON.stringify(manifest));
  const moduleDir = join(base, 'dist', 'src', 'vxlan', 'native');
  mkdirSync(moduleDir, { recursive: true });
  return moduleDir;
}

describe('where the native addon comes from', () => {
  it('is native/build/Release under the package that holds the module, from dist/ as from src/', () => {
    const moduleDir = tree({ name: 'veil', type: 'module' });
    expect(nativeAddonPath(moduleDir)).toBe(resolve(moduleDir, '../../../..', 'native/build/Release/veil_native.node'));
    expect(packageRoot(resolve(import.meta.dirname, '../../../src/vxlan/native'))).toBe(
      resolve(import.meta.dirname, '../../..'),
    );
  });

  it("is never the working directory, not even when veil's install has none", () => {
    const moduleDir = tree(undefined);
    expect(() => nativeAddonPath(moduleDir)).toThrow(expect.objectContaining({ code: 'VEIL_ERR_NATIVE_UNAVAILABLE' }));
  });

  it('is not moved by the environment', () => {
    const moduleDir = tree({ name: 'veil', type: 'module' });
    process.env.VEIL_NATIVE_ADDON = join(root, 'evil.node');
    try {
      expect(nativeAddonPath(moduleDir)).toBe(
        resolve(moduleDir, '../../../..', 'native/build/Release/veil_native.node'),
      );
    } finally {
      delete process.env.VEIL_NATIVE_ADDON;
    }
  });

  it("refuses a package.json that is not veil's on the way up", () => {
    const moduleDir = tree({ name: 'someone-else' });
    expect(() => nativeAddonPath(moduleDir)).toThrow(/is not veil's/);
  });
});
