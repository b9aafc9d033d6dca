// What the Gateway programs for plain networks on each plain path (docs/plumbing.md "Plain networks"):
// in the kernel a plain network's FDB points at peers' underlay addresses and never reaches the data
// path, peers' addresses are let through the underlay firewall while one peer has them; through the
// gateway everything points at gateway addresses, as for encrypted networks.
import { describe, expect, it } from 'vitest';
import { recordingGateway } from '../support/recording-gateway.js';
import type { PlainPath } from '../../src/model/plain-path.js';
import { VTEP_GATEWAY_PORT, VXLAN_PORT } from '../../src/vxlan/wire/constants.js';

const PLAIN = { id: 'p', index: 1, vni: 4097, encrypted: false };
const ENC = { id: 'e', index: 2, vni: 4098, encrypted: true };

function setup(plainPath: PlainPath) {
  const { gateway, plumbing, dataPath, peer } = recordingGateway(plainPath);
  const fdb = (vni: number) =>
    plumbing.fdb
      .get(vni)
      ?.map((e) => `${e.mac} ${e.dst}:${e.port}`)
      .sort();
  return { gateway, plumbing, dataPath, peer, fdb };
}

describe('plain networks in the kernel', () => {
  it('point their FDB at the peers’ underlay addresses, and the data path never has them', async () => {
    const { gateway, plumbing, dataPath, peer, fdb } = setup('kernel');
    await gateway.addNetwork(PLAIN);
    await gateway.addNetwork(ENC);
    await gateway.addPeer(peer('h2', 2));
    await gateway.addPeer(peer('h3', 3));
    expect([...dataPath.networks.keys()]).toEqual([ENC.vni]);
    expect(fdb(PLAIN.vni)).toEqual([
      `00:00:00:00:00:00 198.18.0.2:${VXLAN_PORT}`,
      `00:00:00:00:00:00 198.18.0.3:${VXLAN_PORT}`,
    ]);
    expect(fdb(ENC.vni)).toEqual([
      `00:00:00:00:00:00 169.254.64.2:${VTEP_GATEWAY_PORT}`,
      `00:00:00:00:00:00 169.254.64.3:${VTEP_GATEWAY_PORT}`,
    ]);
    await gateway.addRemoteMac(PLAIN.vni, 'h3', '02:42:0a:00:00:07');
    expect(plumbing.gatewaysFor(PLAIN.vni, '02:42:0a:00:00:07')).toEqual(['198.18.0.3']);
    expect([...plumbing.underlayPeers].sort()).toEqual(['198.18.0.2', '198.18.0.3']);
    expect(gateway.status().networks.map((n) => n.vni)).toEqual([PLAIN.vni, ENC.vni]);
    expect(gateway.status().pairs.every((p) => p.vni === ENC.vni)).toBe(true);

    await gateway.removeNetwork(PLAIN.vni);
    expect(plumbing.networks.has(PLAIN.vni)).toBe(false);
    expect([...dataPath.networks.keys()]).toEqual([ENC.vni]);
  });

  it('an underlay address stays allowed while any peer has it (hosts behind one NAT)', async () => {
    const { gateway, plumbing, peer, fdb } = setup('kernel');
    await gateway.addNetwork(PLAIN);
    await gateway.addPeer(peer('h2', 2, '203.0.113.9'));
    await gateway.addPeer(peer('h3', 3, '203.0.113.9'));
    await gateway.removePeer('h2');
    expect([...plumbing.underlayPeers]).toEqual(['203.0.113.9']);
    await gateway.removePeer('h3');
    expect([...plumbing.underlayPeers]).toEqual([]);
    expect(fdb(PLAIN.vni)).toEqual([]);
  });

  it('a peer that moves to another address leaves the old one behind', async () => {
    const { gateway, plumbing, peer, fdb } = setup('kernel');
    await gateway.addNetwork(PLAIN);
    const h2 = peer('h2', 2);
    await gateway.addPeer(h2);
    await gateway.addPeer({ ...h2, address: '198.18.0.22' });
    expect([...plumbing.underlayPeers]).toEqual(['198.18.0.22']);
    expect(fdb(PLAIN.vni)).toEqual([`00:00:00:00:00:00 198.18.0.22:${VXLAN_PORT}`]);
  });

  it('pruning removes entries and underlay peers no current peer has, and keeps the rest', async () => {
    const { gateway, plumbing, peer, fdb } = setup('kernel');
    await gateway.addNetwork(PLAIN);
    await gateway.addNetwork(ENC);
    await gateway.addPeer(peer('h2', 2));
    // Left by an earlier run: a departed peer, a gateway address on a plain network, an old port.
    plumbing.fdb
      .get(PLAIN.vni)!
      .push(
        { mac: '00:00:00:00:00:00', dst: '198.18.0.9', port: VXLAN_PORT },
        { mac: '00:00:00:00:00:00', dst: '169.254.64.2', port: VTEP_GATEWAY_PORT },
        { mac: '00:00:00:00:00:00', dst: '198.18.0.2', port: 8472 },
      );
    plumbing.fdb.get(ENC.vni)!.push({ mac: '00:00:00:00:00:00', dst: '198.18.0.2', port: VXLAN_PORT });
    plumbing.underlayPeers.add('198.18.0.9');
    expect(await gateway.pruneStaleFdb()).toBe(4);
    expect(fdb(PLAIN.vni)).toEqual([`00:00:00:00:00:00 198.18.0.2:${VXLAN_PORT}`]);
    expect(fdb(ENC.vni)).toEqual([`00:00:00:00:00:00 169.254.64.2:${VTEP_GATEWAY_PORT}`]);
    expect([...plumbing.underlayPeers]).toEqual(['198.18.0.2']);
  });
});

describe('plain networks through the gateway', () => {
  it('go to the data path and point at gateway addresses; no underlay peers', async () => {
    const { gateway, plumbing, dataPath, peer, fdb } = setup('gateway');
    await gateway.addNetwork(PLAIN);
    await gateway.addPeer(peer('h2', 2));
    expect([...dataPath.networks.keys()]).toEqual([PLAIN.vni]);
    expect(fdb(PLAIN.vni)).toEqual([`00:00:00:00:00:00 169.254.64.2:${VTEP_GATEWAY_PORT}`]);
    expect([...plumbing.underlayPeers]).toEqual([]);
  });
});
