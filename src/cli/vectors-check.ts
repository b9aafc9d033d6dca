import { readFile } from 'node:fs/promises';
import type { AeadProvider } from '../crypto/aead.js';
import { nobleAeadProvider } from '../crypto/aead-noble.js';
import { nodeAeadProvider } from '../crypto/aead-node.js';
import { checkEspVector, parseEspVectorFile } from '../vxlan/wire/esp-vectors.js';
import { nativeAeadProvider, nativeAvailable } from '../vxlan/native/addon.js';

/** Every AES-GCM implementation veil has here: node:crypto, @noble/ciphers, and the native addon when built. */
export const ESP_IMPLEMENTATIONS: readonly AeadProvider[] = [
  nodeAeadProvider,
  nobleAeadProvider,
  ...(nativeAvailable() ? [nativeAeadProvider] : []),
];

/**
 * `veil vectors check FILE`: every case through the sealer and the opener of
 * every implementation. A case passes only if it passes on all of them.
 * Ends with `N passed, M failed`; returns the exit code (1 when M > 0).
 */
export async function vectorsCheck(
  path: string,
  print: (line: string) => void,
  providers = ESP_IMPLEMENTATIONS,
): Promise<number> {
  let file;
  try {
    file = parseEspVectorFile(JSON.parse(await readFile(path, 'utf8')));
  } catch (err) {
    print(`veil vectors check: ${path}: ${(err as Error).message}`);
    return 2;
  }
  let passed = 0;
  let failed = 0;
  for (const v of file.tests) {
    const problems = providers.flatMap((p) => checkEspVector(v, p).map((f) => `[${p.name}] ${f}`));
    if (problems.length === 0) {
      passed++;
    } else {
      failed++;
      for (const p of problems) print(`FAIL tcId ${v.tcId}: ${p}`);
    }
  }
  print(`implementations: ${providers.map((p) => p.name).join(', ')}`);
  print(`${passed} passed, ${failed} failed`);
  return failed > 0 ? 1 : 0;
}
