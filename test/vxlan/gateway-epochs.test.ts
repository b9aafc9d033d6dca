// Gateway epoch bookkeeping against a recording data path: a partial install or activation is never
// recorded as done (the retry redoes it), a peer the data path refused gets no FDB entries, and
// retiring an epoch removes any outbound SA still sealing with it.
import { describe, expect, it } from 'vitest';
import { recordingGateway } from '../support/recording-gateway.js';
import { SecretKey } from '../../src/crypto/secret.js';
import { HOST_INDEX_MAX } from '../../src/model/ids.js';

function setup() {
  const { gateway, plumbing, dataPath, peer } = recordingGateway();
  /** The gateway addresses the VTEP floods network 4096's frames to. */
  const floods = () => plumbing.gatewaysFor(4096, 'ff:ff:ff:ff:ff:ff');
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

  it('a peer the data path refuses is not added and gets no FDB entry; a later retry adds it', async () => {
    const { gateway, dataPath, floods, peer } = setup();
    await gateway.addNetwork({ id: 'n', index: 1, vni: 4096, encrypted: false });
    const h2 = peer('h2', 2);
    dataPath.failAddFor.add('h2');
    await expect(gateway.addPeer(h2)).rejects.toThrow(/NOMEM/);
    expect(floods()).toEqual([]);
    expect(gateway.status().peers).toEqual([]);
    dataPath.failAddFor.clear();
    await gateway.addPeer(h2);
    expect(floods()).toEqual(['169.254.64.2']);
  });

  it("a peer's gateway address is the peer net + its index, up to the last index the SPI can carry", async () => {
    const { gateway, floods, peer } = setup();
    await gateway.addNetwork({ id: 'n', index: 1, vni: 4096, encrypted: false });
    for (const index of [2, 255, 256, HOST_INDEX_MAX]) await gateway.addPeer({ ...peer(`h${index}`, 2), index });
    expect(floods()).toEqual(['169.254.64.2', '169.254.64.255', '169.254.65.0', '169.254.127.255']);
    expect(gateway.status().peers.map((p) => p.gateway)).toEqual(floods());
  });

  it('a new peer with the index of another takes its place: one gateway address never names two peers', async () => {
    const { gateway, dataPath, floods, peer } = setup();
    await gateway.addNetwork({ id: 'n', index: 1, vni: 4096, encrypted: false });
    await gateway.addPeer(peer('old', 7));
    await gateway.addPeer(peer('new', 7));
    expect([...dataPath.peers.keys()]).toEqual(['new']);
    expect(gateway.status().peers.map((p) => p.id)).toEqual(['new']);
    expect(floods()).toEqual(['169.254.64.7']);
  });
});
