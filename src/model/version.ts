/** veil's version, as hosts report it in their etcd record and the API in its OpenAPI document. */
export const VERSION = '0.3.0';

/**
 * Whether two veil versions derive the same SA keys and speak the same wire format: while the major
 * version is 0 a minor release may change either (semver), from 1.0 on only a major one may. An
 * unparsable version is compatible only with itself.
 */
export function sameReleaseLine(a: string, b: string): boolean {
  const line = (v: string): string | undefined => {
    const m = /^(\d+)\.(\d+)\.\d+/.exec(v);
    if (!m) return undefined;
    return m[1] === '0' ? `0.${m[2]}` : m[1];
  };
  const la = line(a);
  const lb = line(b);
  return la !== undefined && lb !== undefined ? la === lb : a === b;
}
