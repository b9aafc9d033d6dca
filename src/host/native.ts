/*
 * Where veil's native addon is, and loading it. The addon (native/*.c, built by `npm run
 * build:native` into native/build/Release/veil_native.node of veil's own install) is loaded from
 * there only: no working directory and no environment variable may hand a root process code to run.
 * src/vxlan/native/addon.ts types the data path's part of it; src/host/exec.ts uses its spawnRun.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VeilError } from '../errors.js';

export class NativeUnavailableError extends VeilError {
  override readonly name = 'NativeUnavailableError';
  constructor(detail: string) {
    super('VEIL_ERR_NATIVE_UNAVAILABLE', detail);
  }
}

const ADDON_RELATIVE = join('native', 'build', 'Release', 'veil_native.node');

/**
 * veil's own install: the nearest directory above `moduleDir` with veil's package.json (from src/ or
 * dist/src/ alike; Node needs that file anyway, for "type": "module"). Never the working directory: a
 * gateway runs as root, and a user-writable directory it was started from must not supply its code.
 */
export function packageRoot(moduleDir: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = moduleDir; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      let name: unknown;
      try {
        name = (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name;
      } catch {
        name = undefined;
      }
      if (name !== 'veil')
        throw new NativeUnavailableError(
          `${manifest} is not veil's: the addon is looked for in veil's own install only`,
        );
      return dir;
    }
    if (dirname(dir) === dir) throw new NativeUnavailableError(`no package.json above ${moduleDir}`);
  }
}

/** Where the addon is: native/build/Release of veil's install. */
export function nativeAddonPath(moduleDir?: string): string {
  return join(packageRoot(moduleDir), ADDON_RELATIVE);
}

/** The addon's exports, untyped (each user types its part); throws NativeUnavailableError with the reason. */
export function requireNativeAddon(): unknown {
  const path = nativeAddonPath();
  try {
    return createRequire(import.meta.url)(path) as unknown;
  } catch (err) {
    throw new NativeUnavailableError(
      `cannot load the native addon from ${path} (run npm run build:native): ${(err as Error).message}`,
    );
  }
}
