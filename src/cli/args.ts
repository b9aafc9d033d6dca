/*
 * A small argv parser for the `veil` command, in the shape of Docker's (pflag):
 *
 *   --name value   --name=value   -n value   -nvalue   -abc (boolean shorts)   --   (ends flags)
 *
 * Flags may sit before, between or after positionals. A flag given twice is a usage error unless it
 * is a list (--opt, --label, --alias): silently keeping one of two --subnet values would hide a mistake.
 */

export type FlagKind = 'boolean' | 'string' | 'list';

export interface FlagSpec {
  readonly kind: FlagKind;
  readonly short?: string;
  /** The value's name in help text, e.g. CIDR. */
  readonly value?: string;
  readonly help: string;
}

export type FlagSpecs = Readonly<Record<string, FlagSpec>>;

export type ParsedFlags<S extends FlagSpecs> = {
  -readonly [K in keyof S]?: S[K]['kind'] extends 'boolean' ? boolean : S[K]['kind'] extends 'list' ? string[] : string;
};

export interface ParsedArgs<S extends FlagSpecs> {
  flags: ParsedFlags<S>;
  positionals: string[];
  /** -h or --help was given. */
  help: boolean;
}

/** Bad flags or arguments: exit 2 with the usage text. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

const HELP_FLAGS = new Set(['-h', '--help']);

/**
 * Parses argv against specs. With stopAtPositional, parsing stops at the first positional and
 * `positionals` holds it and everything after it unparsed (used to find the subcommand past
 * leading global options).
 */
export function parseArgs<S extends FlagSpecs>(
  argv: readonly string[],
  specs: S,
  options: { stopAtPositional?: boolean } = {},
): ParsedArgs<S> {
  const byShort = new Map<string, string>();
  for (const [name, spec] of Object.entries(specs)) if (spec.short) byShort.set(spec.short, name);

  const flags: Record<string, boolean | string | string[]> = {};
  const positionals: string[] = [];
  let help = false;

  const set = (name: string, shown: string, value: string | undefined, next: () => string | undefined) => {
    const spec = specs[name]!;
    if (spec.kind === 'boolean') {
      if (value === undefined) value = 'true';
      if (value !== 'true' && value !== 'false')
        throw new UsageError(`${shown} takes no value (or =true/=false), got "${value}"`);
      if (name in flags) throw new UsageError(`${shown} given more than once`);
      flags[name] = value === 'true';
      return;
    }
    if (value === undefined) value = next();
    if (value === undefined) throw new UsageError(`${shown} needs a value${spec.value ? ` (${spec.value})` : ''}`);
    if (spec.kind === 'list') {
      ((flags[name] ??= []) as string[]).push(value);
    } else {
      if (name in flags) throw new UsageError(`${shown} given more than once`);
      flags[name] = value;
    }
  };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const next = () => (i + 1 < argv.length ? argv[++i] : undefined);
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (HELP_FLAGS.has(arg)) {
      help = true;
    } else if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      if (!Object.hasOwn(specs, name)) throw new UsageError(`unknown flag: --${name}`);
      set(name, `--${name}`, eq < 0 ? undefined : arg.slice(eq + 1), next);
    } else if (arg.startsWith('-') && arg.length > 1) {
      // -abc: boolean shorts in a cluster; a short that takes a value eats the rest (-ok=v, -o k=v).
      for (let j = 1; j < arg.length; j++) {
        const short = arg[j]!;
        const name = byShort.get(short);
        if (name === undefined) throw new UsageError(`unknown shorthand flag: '${short}' in ${arg}`);
        if (specs[name]!.kind === 'boolean') {
          set(name, `-${short}`, undefined, next);
          continue;
        }
        const rest = arg.slice(j + 1);
        set(name, `-${short}`, rest === '' ? undefined : rest.replace(/^=/, ''), next);
        break;
      }
    } else {
      if (options.stopAtPositional) {
        positionals.push(...argv.slice(i));
        break;
      }
      positionals.push(arg);
    }
  }
  return { flags: flags as ParsedFlags<S>, positionals, help };
}

/**
 * Docker's `k=v` list flags (--opt, --label): `k=v` sets k to v, a bare `k` sets it to "" (so
 * `--opt encrypted` is {"encrypted": ""}). The value may itself contain `=`.
 */
export function parseKeyValues(items: readonly string[] | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items ?? []) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    if (key === '') throw new UsageError(`${flag} "${item}": expected key=value or key`);
    out[key] = eq < 0 ? '' : item.slice(eq + 1);
  }
  return out;
}

/** The flags section of a help text, one line per flag, descriptions aligned. */
export function describeFlags(specs: FlagSpecs, options: { withHelp?: boolean } = {}): string {
  const rows = Object.entries(specs).map(([name, spec]) => {
    const left = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.kind === 'boolean' ? '' : ` ${spec.value ?? 'string'}`}`;
    return [left, spec.kind === 'list' ? `${spec.help} (repeatable)` : spec.help] as const;
  });
  if (options.withHelp ?? true) rows.push(['-h, --help', 'print this help']);
  const width = Math.max(...rows.map(([left]) => left.length));
  return rows.map(([left, help]) => `  ${left.padEnd(width)}   ${help}`).join('\n');
}
