import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** vectors/ at the repository root; files keep their source's schema (vectors/README.md). */
export const VECTORS_DIR = fileURLToPath(new URL('../../vectors/', import.meta.url));

export function loadVectors<T>(relativePath: string): T {
  return JSON.parse(readFileSync(VECTORS_DIR + relativePath, 'utf8')) as T;
}

export type WycheproofResult = 'valid' | 'invalid' | 'acceptable';

export interface WycheproofFile<G> {
  algorithm: string;
  numberOfTests: number;
  testGroups: G[];
}

/** Counts cases per (file, implementation) and prints one line per file when the test file ends. */
export class VectorTally {
  readonly #counts = new Map<string, Map<string, number>>();

  add(file: string, implementation: string): void {
    const perImpl = this.#counts.get(file) ?? new Map<string, number>();
    perImpl.set(implementation, (perImpl.get(implementation) ?? 0) + 1);
    this.#counts.set(file, perImpl);
  }

  report(): string {
    return [...this.#counts]
      .map(
        ([file, perImpl]) => `vectors: ${file}: ${[...perImpl].map(([impl, n]) => `${n} cases on ${impl}`).join(', ')}`,
      )
      .join('\n');
  }
}
