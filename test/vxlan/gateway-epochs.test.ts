// Gateway epoch bookkeeping against a recording data path: a partial install or activation is never
// recorded as done (the retry redoes it), a port that cannot be bound gets no FDB entries, and
// retiring an epoch removes any outbound SA still sealing with it.
import { describe, expect, it } from 'vitest';
import { SecretKey } from '../../src/crypto/secret.js';
import { generateX25519KeyPair } from '../../src/crypto/x25519.js';
import { Gateway, peerPort } from '../../src/vxlan/gateway.js';
import { RecordingDataPath } from '../../src/vxlan/datapath-fake.js';
import { RecordingPlumbing } from '../../src/vxlan/plumbing-fake.js';

function setup() {
  const plumbing = new RecordingPlumbing('169.254.1.1', '169.254.1.2');
  const dataPath = new RecordingDataPath();
  const me = generateX25519KeyPair();
  const gateway = new Gateway({
    self: { id: 'h1', index: 1, address: '198.18.0.1', publicKey: me.publicKey, incarnation: 'a' },
    privateKey: me.privateKey,
    plumbing,
    dataPath,
  });
  const peer = (id: string, index: number) => ({
    id,
    index,
    address: `198.18.0.${index}`,
    publicKey: generateX25519KeyPair().publicKey,
    incarnation: 'b',
  });
  /** The gateway ports the VTEP floods network 4096's frames to. */
  const floods = () => plumbing.portsFor(4096, 'ff:ff:ff:ff:ff:ff');
  return { gateway, dataPath, floods, peer };
}

const secret = () => new SecretKey(new Uint8Array(32).fill(9));

describe('Gateway epochs', () => {
  it('a partial inbound install throws, leaves no SA of that epoch behind, and the retry installs every peer', async () => {
    const { gateway, dataPath, peer } = setup();
    await gateway.addNetwork({ id: 'n', index: 1, vni: 4096, encrypted: true });
    for (const p of [peer('h2', 2), peer('h3', 3), peer('h4', 4)]) await gateway.addPeer(p);
    dataPath.failInboundFor.add('h3');
    await expect(gateway.installEpoch(4096, 1, secret())).rejects.toThrow(/h3: SA table full/);
    expect(gateway.epochs(4096)).toEqual([]);
    // h2 and h4 took their SAs before h3 failed; an epoch the gateway does not hold keeps none.
    expect(Object.fromEntries(dataPath.inbound)).toEqual({ h2: [], h3: [], h4: [] });
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
    expect(floods()).toEqual([]);
    expect(gateway.status().peers).toEqual([]);
    dataPath.failBindFor.clear();
    await gateway.addPeer(h2);
    expect(floods()).toEqual([peerPort(2)]);
  });

  it('peer ports are privileged; a port another service holds is skipped for the next free one', async () => {
    const { gateway, dataPath, floods, peer } = setup();
    await gateway.addNetwork({ id: 'n', index: 1, vni: 4096, encrypted: false });
    dataPath.busyPorts.add(peerPort(3));
    await gateway.addPeer(peer('h3', 3));
    await gateway.addPeer(peer('h4', 4));
    expect(peerPort(3)).toBeLessThan(1024);
    // h3's preferred port is busy: it takes the next one, which is h4's preferred; h4 then takes the one after.
    expect(dataPath.peers.get('h3')).toBe(peerPort(3) + 1);
    expect(dataPath.peers.get('h4')).toBe(peerPort(4) + 1);
    expect(floods()).toEqual([peerPort(3) + 1, peerPort(4) + 1]);
    expect(gateway.status().peers.map((p) => p.port)).toEqual([peerPort(3) + 1, peerPort(4) + 1]);
  });
});
