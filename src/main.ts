import { mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { buildApp } from './api/app.js';
import { nodeAeadProvider } from './crypto/aead-node.js';
import type { Logger } from './log.js';
import type { StaticGatewayConfig } from './static-config.js';
import { TsDataPath } from './vxlan/data-path-ts.js';
import { Gateway } from './vxlan/gateway.js';
import type { DataPath } from './vxlan/io.js';
import { DgramUnderlay, DgramVtep } from './vxlan/io-dgram.js';
import { NativeDataplane } from './vxlan/io-native.js';
import { nativeAvailable } from './vxlan/native.js';
import { VeilError } from './errors.js';
import { IproutePlumbing } from './vxlan/plumbing.js';

/*
 * Composition root: config → plumbing → I/O → gateway → API.
 * (The etcd store and the key schedule join here with their issues.)
 */

export interface RunningGateway {
  gateway: Gateway;
  stop(options?: { unplumb?: boolean }): Promise<void>;
}

export async function startStaticGateway(config: StaticGatewayConfig, log: Logger): Promise<RunningGateway> {
  const plumbing = new IproutePlumbing({
    vtepNetns: config.vtep.netns,
    underlayMtu: config.underlayMtu,
    ...(config.vtep.linkNet ? { linkNet: config.vtep.linkNet } : {}),
  });
  // The native batched data path by default (DESIGN: per-packet node:crypto cannot keep up); the
  // TypeScript path when configured, or when the addon is not built here (logged: it is ~20x slower).
  let kind = config.dataPath ?? 'native';
  if (kind === 'native' && !nativeAvailable()) {
    if (config.dataPath === 'native') throw new VeilError('VEIL_ERR_CONFIG_INVALID', 'dataPath "native" but the native addon is not built (npm run build:native)');
    log.warn('native data path not built; falling back to the TypeScript data path');
    kind = 'ts';
  }
  const dataPath: DataPath = kind === 'native'
    ? new NativeDataplane({ underlayAddress: config.host.address, hostAddress: plumbing.hostAddress, vtepAddress: plumbing.vtepAddress, underlayMtu: config.underlayMtu })
    : new TsDataPath({
      vtepAddress: plumbing.vtepAddress,
      underlay: new DgramUnderlay(config.host.address),
      vtep: new DgramVtep(plumbing.hostAddress, plumbing.vtepAddress),
      provider: nodeAeadProvider,
    });
  const gateway = new Gateway({
    self: { id: config.host.id, index: config.host.index, address: config.host.address, publicKey: new Uint8Array(0), incarnation: config.host.incarnation },
    privateKey: config.host.privateKey,
    plumbing,
    dataPath,
    ...(config.sequenceBudget ? { sequenceBudget: config.sequenceBudget } : {}),
    log: (msg, fields) => log.info(fields ?? {}, msg),
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
  log.info({ host: config.host.id, dataPath: kind, peers: config.peers.length, networks: config.networks.length }, 'gateway ready');
  return {
    gateway,
    async stop(options) {
      await app.close();
      await gateway.stop(options);
    },
  };
}
