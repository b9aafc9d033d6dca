#!/usr/bin/env node
import { VeilError } from '../errors.js';
import { createLogger } from '../log.js';
import { hostname } from 'node:os';
import { GATEWAY_FLAGS, parseGatewayConfig } from '../config/cluster.js';
import { startClusterGateway } from '../main.js';
import { runCa } from './ca.js';
import { runCniCommand, runHost, runNetwork, splitGlobalOptions } from './network.js';
import { vectorsCheck } from './vectors-check.js';

const USAGE = `usage: veil <command>

commands:
  gateway [flags]          run this host's gateway, following etcd (veil gateway --help)
  network COMMAND          create, ls, inspect, rm, connect, disconnect overlay networks (veil network --help)
  host ls                  list the hosts registered with the control plane
  cni config|install ...   a CNI configuration list for a network; veil-cni into a plugin directory (veil cni --help)
  ca init|issue ...        the API's client-certificate CA (veil ca --help)
  vectors check FILE       run an ESP vector file through the sealer and opener of every implementation
`;

const GATEWAY_USAGE = `usage: veil gateway --cluster-advertise IP|IFACE [--cluster-store etcd://HOST:PORT[,HOST:PORT]] [flags]
       (no --cluster-store: this host alone, with an embedded etcd in the data dir)

flags (each also from its environment variable):
${GATEWAY_FLAGS.map((f) => `  --${f.name.padEnd(18)} ${f.env.padEnd(24)} ${f.help}`).join('\n')}
`;

async function gateway(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(GATEWAY_USAGE);
    return 0;
  }
  if (args.includes('--config')) {
    // Static keys in a file cannot promise a fresh incarnation at every start (docs/operations.md "Static mode").
    process.stderr.write(
      'veil gateway: --config (static mode) is gone: a file with fixed keys and a fixed incarnation can start twice ' +
        'and reuse GCM nonces. Run cluster mode; on one host, without --cluster-store, it keeps an embedded etcd.\n',
    );
    return 2;
  }
  const log = createLogger('veil-gateway');
  const running = await startClusterGateway(parseGatewayConfig(args, process.env, hostname()), log);
  await new Promise<void>((resolve) => {
    const shutdown = (signal: string) => {
      log.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });
  // A clean shutdown removes what it plumbed; the identity key stays in the data dir.
  await running.stop({ unplumb: true });
  // Everything is closed, so the event loop should drain now. If something still holds it (an etcd
  // client's handles after an outage), say what and exit anyway: a stopped gateway must not wait for
  // its supervisor's kill.
  setTimeout(() => {
    const still: Record<string, number> = {};
    for (const kind of process.getActiveResourcesInfo()) still[kind] = (still[kind] ?? 0) + 1;
    log.warn({ still }, 'event loop still busy after the gateway stopped; exiting');
    process.exit(0);
  }, STOPPED_EXIT_MS).unref();
  return 0;
}

/** How long a stopped gateway waits for its event loop to drain before it exits anyway. */
const STOPPED_EXIT_MS = 2_000;

async function main(argv: string[]): Promise<number> {
  // The control-plane commands take global options (--api, --tls-*, --format) before the group too.
  const control = splitGlobalOptions(argv);
  const io = { stdout: process.stdout, stderr: process.stderr, env: process.env };
  if (control.group === 'network') return runNetwork(control.argv, io);
  if (control.group === 'host') return runHost(control.argv, io);
  if (control.group === 'cni') return runCniCommand(control.argv, io);
  const [group, command, ...rest] = argv;
  if (group === 'ca') return runCa(argv.slice(1));
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
