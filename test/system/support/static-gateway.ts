// The static gateway: a test fixture, not something users run (docs/operations.md "Static mode").
// One host's data plane from a file the namespace bed writes (test/support/static-config.ts): the real
// Gateway, plumbing and data path with fixed epoch secrets, no etcd, no agent, no key schedule. The
// data-path tests and bench/overlay run it as a process in a host namespace:
//
//   node dist/test/system/support/static-gateway.js --config FILE [--unplumb-on-exit]
//
// It prints "gateway ready" once plumbed and listening, and stops cleanly on SIGTERM or SIGINT.
import { mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../../../src/api/app.js';
import { createLogger, type Logger } from '../../../src/log.js';
import { chooseDataPath } from '../../../src/main.js';
import { Gateway } from '../../../src/vxlan/gateway.js';
import { IproutePlumbing } from '../../../src/vxlan/plumbing.js';
import { loadStaticGatewayConfig, type StaticGatewayConfig } from '../../support/static-config.js';

export async function startStaticGateway(
  config: StaticGatewayConfig,
  log: Logger,
): Promise<{ gateway: Gateway; stop(options?: { unplumb?: boolean }): Promise<void> }> {
  const plumbing = new IproutePlumbing({
    vtepNetns: config.vtep.netns,
    underlayMtu: config.underlayMtu,
    underlayAddress: config.host.address,
    ...(config.plainPath ? { plainPath: config.plainPath } : {}),
    ...(config.vtep.linkNet ? { linkNet: config.vtep.linkNet } : {}),
    log: (level, msg, fields) => log[level](fields ?? {}, msg),
  });
  const { dataPath, kind } = chooseDataPath(config.dataPath, config.host.address, plumbing, config.underlayMtu, log);
  const gateway = new Gateway({
    self: {
      id: config.host.id,
      index: config.host.index,
      address: config.host.address,
      publicKey: new Uint8Array(0),
      incarnation: config.host.incarnation,
    },
    privateKey: config.host.privateKey,
    plumbing,
    dataPath,
    ...(config.encryptedVtep ? { vtep: config.encryptedVtep } : {}),
    ...(config.sequenceBudget ? { sequenceBudget: config.sequenceBudget } : {}),
    log: (msg, fields, level) => log[level ?? 'info'](fields ?? {}, msg),
  });
  await gateway.start();
  for (const network of config.networks) await gateway.addNetwork(network, network.key);
  for (const peer of config.peers) await gateway.addPeer(peer);

  const app = buildApp({ gatewayStatus: () => gateway.status() });
  if (config.apiSocket) {
    mkdirSync(dirname(config.apiSocket), { recursive: true });
    rmSync(config.apiSocket, { force: true });
    await app.listen({ path: config.apiSocket });
    log.info({ socket: config.apiSocket }, 'API listening');
  }
  log.info(
    { host: config.host.id, dataPath: kind, peers: config.peers.length, networks: config.networks.length },
    'gateway ready',
  );
  return {
    gateway,
    async stop(options) {
      await app.close();
      await gateway.stop(options);
    },
  };
}

async function main(args: string[]): Promise<number> {
  const i = args.indexOf('--config');
  const path = i >= 0 ? args[i + 1] : undefined;
  if (!path) {
    process.stderr.write('usage: static-gateway --config FILE [--unplumb-on-exit]\n');
    return 2;
  }
  const log = createLogger('veil-static-gateway');
  const running = await startStaticGateway(loadStaticGatewayConfig(path), log);
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const)
      process.once(signal, () => {
        log.info({ signal }, 'shutting down');
        resolve();
      });
  });
  await running.stop({ unplumb: args.includes('--unplumb-on-exit') });
  return 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    process.exitCode = await main(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`static-gateway: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  }
}
