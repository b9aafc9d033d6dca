#!/usr/bin/env node
import { vectorsCheck } from './vectors-check.js';

const USAGE = `usage: veil <command>

commands:
  vectors check FILE   run an ESP vector file through the sealer and opener of every implementation
`;

async function main(argv: string[]): Promise<number> {
  const [group, command, ...rest] = argv;
  if (group === 'vectors' && command === 'check') {
    if (rest.length !== 1) {
      process.stderr.write('usage: veil vectors check FILE\n');
      return 2;
    }
    return vectorsCheck(rest[0]!, (line) => process.stdout.write(line + '\n'));
  }
  if (group === undefined || group === 'help' || group === '--help' || group === '-h') {
    process.stdout.write(USAGE);
    return group === undefined ? 2 : 0;
  }
  process.stderr.write(`veil: unknown command "${argv.join(' ')}"\n${USAGE}`);
  return 2;
}

process.exitCode = await main(process.argv.slice(2));
