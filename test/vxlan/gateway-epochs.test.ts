// Gateway epoch bookkeeping against a recording data path: a partial install or activation is never
// recorded as done (the retry redoes it), a port that cannot be bound gets no FDB entries, and
// retiring an epoch removes any outbound SA still sealing with it.
import { describe, expect, it } from 'vitest';
import { SecretKey } from '../../src/crypto/secret.js';
import { generateX25519KeyPair } from '../../src/crypto/x25519.js';
import { Gateway, peerPort } from '../../src/vxlan/gateway.js';
import type { DataPath, DataPathStatus, SaKeySpec } from '../../src/vxlan/io.js';
import type { Plumbing } from '../../src/vxlan/plumbing.js';

class FakeDataPath implements DataPath {
  inbound = new Map<string, number[]>();
  outbound = new Map<string, number>();
  failInboundFor = new Set<string>();
  failBindFor = new Set<string>();
  busyPorts = new Set<number>();
  bound = new Map<string, number>();
  async start() {}
  async stop() {}
  setNetwork() {}
  removeNetwork() {}
  async addPeer(peer: { id: string }, port: number) {
    if (this.failBindFor.has(peer.id)) throw new Error(`cannot bind 169.254.1.1:${port}: bind EACCES`);
    if (this.busyPorts.has(port)) throw new Error(`cannot bind 169.254.1.1:${port}: bind EADDRINUSE`);
    this.bound.set(peer.id, port);
  }
  async removePeer(id: string) {
    this.inbound.delete(id);
    this.outbound.delete(id);
  }
  installInbound(sa: SaKeySpec) {
    if (this.failInboundFor.has(sa.peerId)) throw new Error('SA table full');
    const list = this.inbound.get(sa.peerId) ?? [];
    if (!list.includes(sa.epoch)) list.push(sa.epoch);
    this.inbound.set(sa.peerId, list);
  }
  activateOutbound(sa: SaKeySpec) {
    this.outbound.set(sa.peerId, sa.epoch);
  }
  retireInbound(peerId: string, _vni: number, epoch: number) {
    this.inbound.set(peerId, (this.inbound.get(peerId) ?? []).filter((e) => e !== epoch));
  }
  removeOutbound(peerId: string) {
    this.outbound.delete(peerId);
  }
  status(): DataPathStatus {
    return {
      pairs: [...this.outbound].map(([peer, epoch]) => ({ peer, vni: 4096, encrypted: true, txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, drops: {}, outbound: { spi: 0x1000, epoch, sealed: 1, sequenceHeadroom: 1 }, inbound: [] })),
      unattributedDrops: {},
      sendFailures: 0,
    };
  }
}

function setup() {
  const floods: number[] = [];
  const plumbing = {
    hostAddress: '169.254.1.1', vtepAddress: '169.254.1.2',
    async ensureHost() {}, async teardownHost() {}, async ensureNetwork() {}, async removeNetwork() {},
    async attachContainer() {}, async detachContainer() {},
    async ensurePeerFlood(_vni: number, port: number) { floods.push(port); },
    async ensurePeerMac() {}, async removePeerMac() {}, async removePeer() {}, async listFdb() { return []; },
  } as unknown as Plumbing;
  const dataPath = new FakeDataPath();
  const me = generateX25519KeyPair();
  const gateway = new Gateway({ self: { id: 'h1', index: 1, address: '198.18.0.1', publicKey: me.publicKey, incarnation: 'a' }, privateKey: me.privateKey, plumbing, dataPath });
  const peer = (id: string, index: number) => ({ id, index, address: `198.18.0.${index}`, publicKey: generateX25519KeyPair().publicKey, incarnation: 'b' });
  return { gateway, dataPath, floods, peer };
}

const secret = () => new SecretKey(new Uint8Array(32).fill(9));

describe('Gateway epochs', () => {
  it('a partial inbound install throws, is not recorded, and the retry installs every peer', async () => {
    const { gateway, dataPath, peer } = setup();
    await gateway.addNetwork({ id: 'n', index: 1, vni: 4096, encrypted: true });
    for (const p of [peer('h2', 2), peer('h3', 3), peer('h4', 4)]) await gateway.addPeer(p);
    dataPath.failInboundFor.add('h3');
    await expect(gateway.installEpoch(4096, 1, secret())).rejects.toThrow(/h3: SA table full/);
    expect(gateway.epochs(4096)).toEqual([]);
    dataPath.failInboundFor.clear();
    await gateway.installEpoch(4096, 1, secret());
    expect(Object.fromEntries(dataPath.inbound)).toEqual({ h2: [1], h3: [1], h4: [1] });
    expect(gateway.epochs(4096)).toEqual([{ epoch: 1, active: false }]);
  });

  it('retiring an epoch removes outbound SAs still sealing with it, whatever the bookkeeping says', async () => {
    const { gateway, dataPath, peer } = setup();
    await gateway.addNetwork({ id: 'n', index: 1, vni: 4096, encrypted: true });
    await gateway.addPeer(peer('h2', 2));
    await gateway.installEpoch(4096, 1, secret());
    await gateway.activateEpoch(4096, 1);
    await gateway.installEpoch(4096, 2, new SecretKey(new Uint8Array(32).fill(8)));
    await gateway.activateEpoch(4096, 2);
    dataPath.outbound.set('h2', 1); // a data path that somehow still seals with epoch 1
    await gateway.retireEpoch(4096, 1);
    expect(dataPath.outbound.has('h2')).toBe(false);
    expect(dataPath.inbound.get('h2')).toEqual([2]);
  });

  it('a peer whose port cannot be bound is not added and gets no FDB entry; a later retry adds it', async () => {
    const { gateway, dataPath, floods, peer } = setup();
    await gateway.addNetwork({ id: 'n', index: 1, vni: 4096, encrypted: false });
    const h2 = peer('h2', 2);
    dataPath.failBindFor.add('h2');
    await expect(gateway.addPeer(h2)).rejects.toThrow(/EACCES/);
    expect(floods).toEqual([]);
    expect(gateway.status().peers).toEqual([]);
    dataPath.failBindFor.clear();
    await gateway.addPeer(h2);
    expect(floods).toEqual([peerPort(2)]);
  });

  it('peer ports are privileged; a port another service holds is skipped for the next free one', async () => {
    const { gateway, dataPath, floods, peer } = setup();
    await gateway.addNetwork({ id: 'n', index: 1, vni: 4096, encrypted: false });
    dataPath.busyPorts.add(peerPort(3));
    await gateway.addPeer(peer('h3', 3));
    await gateway.addPeer(peer('h4', 4));
    expect(peerPort(3)).toBeLessThan(1024);
    // h3's preferred port is busy: it takes the next one, which is h4's preferred; h4 then takes the one after.
    expect(dataPath.bound.get('h3')).toBe(peerPort(3) + 1);
    expect(dataPath.bound.get('h4')).toBe(peerPort(4) + 1);
    expect(floods).toEqual([peerPort(3) + 1, peerPort(4) + 1]);
    expect(gateway.status().peers.map((p) => p.port)).toEqual([peerPort(3) + 1, peerPort(4) + 1]);
  });
});
