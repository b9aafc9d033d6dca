import { equalBytes } from './bytes.js';

const REDACTED = '<redacted>';
// util.inspect looks this symbol up; using Symbol.for keeps crypto/ free of node:util.
const INSPECT = Symbol.for('nodejs.util.inspect.custom');

/**
 * Key material that never prints itself: String(), JSON.stringify() and
 * util.inspect() (so console.log and pino) all give `<redacted>`.
 * The bytes are reachable only through `exposeDanger()`, whose name marks
 * every place that handles raw key material.
 */
export class SecretKey {
  readonly #bytes: Uint8Array;

  constructor(bytes: Uint8Array) {
    this.#bytes = Uint8Array.from(bytes);
  }

  get length(): number {
    return this.#bytes.length;
  }

  /** The raw bytes (a view, not a copy). Do not log, store or send them. */
  exposeDanger(): Uint8Array {
    return this.#bytes;
  }

  /** First `n` bytes as a new key (e.g. KEYMAT → AES key, RFC 4106 §8.1). */
  slice(start: number, end?: number): SecretKey {
    return new SecretKey(this.#bytes.subarray(start, end));
  }

  equals(other: SecretKey): boolean {
    return equalBytes(this.#bytes, other.#bytes);
  }

  /** Overwrite the bytes; the key is unusable afterwards. */
  wipe(): void {
    this.#bytes.fill(0);
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [INSPECT](): string {
    return REDACTED;
  }
}
