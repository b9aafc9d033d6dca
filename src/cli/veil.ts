#!/usr/bin/env node
import { VeilError } from '../errors.js';
import { createLogger } from '../log.js';
import { startStaticGateway } from '../main.js';
import { loadStaticGatewayConfig } from '../static-config.js';
import { vectorsCheck } from './vectors-check.js';

const USAGE = `usage: veil <command>

commands:
  gateway --config FILE    run this host's gateway from a static configuration (hosts, networks, keys)
  vectors check FILE       run an ESP vector file through the sealer and opener of every implementation
`;

async function gateway(args: string[]): Promise<number> {
  const i = args.indexOf('--config');
  const path = i >= 0 ? args[i + 1] : undefined;
  if (!path) {
    process.stderr.write('usage: veil gateway --config FILE [--unplumb-on-exit]\n');
    return 2;
  }
  const log = createLogger('veil-gateway');
  const running = await startStaticGateway(loadStaticGatewayConfig(path), log);
  const unplumb = args.includes('--unplumb-on-exit');
  await new Promise<void>((resolve) => {
    const shutdown = (signal: string) => {
      log.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });
  await running.stop({ unplumb });
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [group, command, ...rest] = argv;
  if (group === 'gateway') return gateway(argv.slice(1));
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

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  // Control-plane errors carry a code; anything else is a bug worth its stack.
  if (err instanceof VeilError) process.stderr.write(`veil: ${err.code}: ${err.message}\n`);
  else process.stderr.write(`veil: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
}
