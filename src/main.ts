import { mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { buildApp } from './api/app.js';
import { nodeAeadProvider } from './crypto/aead-node.js';
import type { Logger } from './log.js';
import type { StaticGatewayConfig } from './static-config.js';
import { Gateway } from './vxlan/gateway.js';
import { DgramUnderlay, DgramVtep } from './vxlan/io-dgram.js';
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
  const gateway = new Gateway({
    self: { id: config.host.id, index: config.host.index, address: config.host.address, publicKey: new Uint8Array(0), incarnation: config.host.incarnation },
    privateKey: config.host.privateKey,
    plumbing,
    underlay: new DgramUnderlay(config.host.address),
    vtep: new DgramVtep(plumbing.hostAddress, plumbing.vtepAddress),
    provider: nodeAeadProvider,
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
  log.info({ host: config.host.id, peers: config.peers.length, networks: config.networks.length }, 'gateway ready');
  return {
    gateway,
    async stop(options) {
      await app.close();
      await gateway.stop(options);
    },
  };
}
