// The dependency rules of docs/architecture.md "Dependencies", checked on the source: no import
// circle anywhere in src/ (type-only imports count), and every import between areas is allowed.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = resolve(import.meta.dirname, '..', 'src');

/** What each area may import (besides itself). Areas: a top-level file or folder of src/, vxlan/ one level down. */
const ALLOWED: Record<string, readonly string[]> = {
  errors: [],
  version: [],
  log: [],
  model: [],
  crypto: [],
  host: ['errors', 'model'],
  tls: ['errors'],
  config: ['crypto', 'errors', 'model'],
  'vxlan/wire': ['crypto', 'model'],
  'vxlan/datapath': ['crypto', 'vxlan/wire'],
  'vxlan/sa': ['crypto', 'errors', 'model', 'vxlan/wire', 'vxlan/datapath'],
  'vxlan/ts': ['crypto', 'errors', 'model', 'vxlan/wire', 'vxlan/sa', 'vxlan/datapath'],
  'vxlan/native': ['crypto', 'errors', 'host', 'model', 'vxlan/wire', 'vxlan/sa', 'vxlan/datapath'],
  'vxlan/datapath-fake': ['vxlan/datapath'],
  'vxlan/plumbing': ['errors', 'host', 'model', 'vxlan/wire'],
  'vxlan/plumbing-fake': ['host', 'model', 'vxlan/plumbing', 'vxlan/wire'],
  'vxlan/gateway': ['crypto', 'errors', 'host', 'model', 'vxlan/datapath', 'vxlan/plumbing', 'vxlan/sa', 'vxlan/wire'],
  store: ['crypto', 'errors', 'log', 'model'],
  keyrotation: ['crypto', 'errors', 'model', 'store'],
  dns: ['errors', 'host', 'log', 'model', 'store'],
  agent: ['crypto', 'errors', 'model', 'store', 'vxlan/gateway', 'vxlan/datapath', 'vxlan/plumbing'],
  docker: ['errors', 'model', 'store'],
  // The CNI plugin is an API client like the CLI, through the CLI's client.
  cni: ['cli', 'host', 'model'],
  api: [
    'crypto',
    'docker',
    'errors',
    'keyrotation',
    'model',
    'store',
    'tls',
    'vxlan/gateway',
    'vxlan/datapath',
    'vxlan/wire',
  ],
  // One host's control plane around its gateway: wiring, for veil gateway and the in-process cluster.
  'cluster-host': [
    'agent',
    'api',
    'crypto',
    'dns',
    'keyrotation',
    'model',
    'store',
    'version',
    'vxlan/datapath',
    'vxlan/gateway',
    'vxlan/plumbing',
    'vxlan/sa',
  ],
  // The composition root and the command line wire everything.
  main: ['*'],
  cli: ['*'],
};

function tsFiles(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) tsFiles(path, out);
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

function areaOf(file: string): string {
  const parts = relative(SRC, file).split(sep);
  const bare = (s: string) => s.replace(/\.ts$/, '');
  if (parts[0] === 'vxlan') return `vxlan/${bare(parts[1]!)}`;
  return bare(parts[0]!);
}

/** file → the files of src/ it imports (import and export ... from, type-only included). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of tsFiles(SRC)) {
    const targets: string[] = [];
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(?:import|export)\s+(?:type\s+)?(?:[^'"]*?\s+from\s+)?['"](\.{1,2}\/[^'"]+)['"]/g)) {
      targets.push(resolve(dirname(file), m[1]!).replace(/\.js$/, '.ts'));
    }
    graph.set(file, targets);
  }
  return graph;
}

/** Strongly connected components with more than one file, or a file importing itself (Tarjan). */
function circles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || graph.get(v)!.includes(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

describe('the source layout (docs/architecture.md "Dependencies")', () => {
  const graph = importGraph();

  it('has no import circle in src/', () => {
    expect(graph.size).toBeGreaterThan(50);
    expect(circles(graph).map((c) => c.map((f) => relative(SRC, f)))).toEqual([]);
  });

  it('finds a circle when there is one (the check can fail)', () => {
    const graph = new Map([
      ['a', ['b']],
      ['b', ['c']],
      ['c', ['a']],
      ['d', ['a']],
      ['e', ['e']],
    ]);
    expect(circles(graph)).toEqual([['a', 'b', 'c'], ['e']]);
  });

  it('imports between areas only in the allowed directions', () => {
    const wrong: string[] = [];
    for (const [file, targets] of graph) {
      const from = areaOf(file);
      const allowed = ALLOWED[from];
      if (!allowed) {
        wrong.push(`${relative(SRC, file)}: area "${from}" has no rule`);
        continue;
      }
      for (const target of targets) {
        const to = areaOf(target);
        if (to !== from && !allowed.includes('*') && !allowed.includes(to))
          wrong.push(`${relative(SRC, file)} → ${relative(SRC, target)}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
