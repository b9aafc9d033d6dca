/*
 * Output for the `veil` command: Docker-style tables for people, JSON for scripts.
 */

export type OutputFormat = 'table' | 'json';

export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'json'];

export function isOutputFormat(s: string): s is OutputFormat {
  return (OUTPUT_FORMATS as readonly string[]).includes(s);
}

/** Columns padded to their widest cell and three spaces apart (Docker's tabwriter padding); no trailing blanks. */
export function renderTable(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = headers.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: readonly string[]) =>
    widths
      .map((w, c) => (cells[c] ?? '').padEnd(w))
      .join('   ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** Indented JSON with a final newline (4 spaces, as `docker inspect` prints). */
export function renderJson(value: unknown): string {
  return JSON.stringify(value, null, 4) + '\n';
}

/** Docker's short id: the first 12 hex digits. */
export function shortId(id: string): string {
  return id.slice(0, 12);
}

export function yesNo(b: boolean | undefined): string {
  return b ? 'yes' : 'no';
}
