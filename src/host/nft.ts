import { parseCommandJson, PlumbingError, type CommandRunner } from './exec.js';
import { execIn } from './netns.js';

/** What a named nftables counter holds. */
export interface NftCounter {
  readonly packets: number;
  readonly bytes: number;
}

/** Applies an nft script in a namespace: one transaction, all of it or nothing. */
export async function applyNftScript(run: CommandRunner, netns: string | undefined, script: string): Promise<void> {
  await execIn(run, netns, ['nft', script]);
}

/** Reads a named counter (`nft -j list counter FAMILY TABLE NAME`). */
export async function readNftCounter(
  run: CommandRunner,
  netns: string | undefined,
  family: string,
  table: string,
  name: string,
): Promise<NftCounter> {
  const { stdout } = await execIn(run, netns, ['nft', '-j', 'list', 'counter', family, table, name]);
  const doc = parseCommandJson<{ nftables?: Array<{ counter?: { name?: string; packets?: number; bytes?: number } }> }>(
    stdout,
    'nft -j list counter',
  );
  const counter = doc.nftables?.find((e) => e.counter?.name === name)?.counter;
  if (counter?.packets === undefined || counter.bytes === undefined) {
    throw new PlumbingError(['nft', 'list', 'counter', name], null, `no counter in: ${stdout.slice(0, 200)}`);
  }
  return { packets: counter.packets, bytes: counter.bytes };
}

/** The named counters of a table, read in one run; a PlumbingError (`what` … missing) when one is not there. */
export async function readNamedCounters<N extends string>(
  run: CommandRunner,
  netns: string | undefined,
  family: string,
  table: string,
  names: Record<N, string>,
  what: string,
): Promise<Record<N, NftCounter>> {
  const counters = await readNftCounters(run, netns, family, table);
  const out = {} as Record<N, NftCounter>;
  for (const [key, name] of Object.entries(names) as Array<[N, string]>) {
    const counter = counters.get(name);
    if (!counter) throw new PlumbingError(['nft', 'list', 'counters', table], null, `${what} counters missing`);
    out[key] = counter;
  }
  return out;
}

/** Reads every named counter of a table in one run (`nft -j list counters table FAMILY TABLE`). */
export async function readNftCounters(
  run: CommandRunner,
  netns: string | undefined,
  family: string,
  table: string,
): Promise<Map<string, NftCounter>> {
  const { stdout } = await execIn(run, netns, ['nft', '-j', 'list', 'counters', 'table', family, table]);
  const doc = parseCommandJson<{ nftables?: Array<{ counter?: { name?: string; packets?: number; bytes?: number } }> }>(
    stdout,
    'nft -j list counters',
  );
  const counters = new Map<string, NftCounter>();
  for (const { counter } of doc.nftables ?? []) {
    if (counter?.name !== undefined && counter.packets !== undefined && counter.bytes !== undefined)
      counters.set(counter.name, { packets: counter.packets, bytes: counter.bytes });
  }
  return counters;
}
