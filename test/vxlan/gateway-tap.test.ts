// What the Gateway asks of the data path and the plumbing for an encrypted network's TAP port
// (docs/plumbing.md "The TAP port"): the port made in the vtep netns and put on the bridge, floods and
// remote MACs in the data path instead of the kernel's FDB, and the kernel VXLAN device wherever the
// port cannot be made or is not wanted, with the reason in the status and the log.
import { describe, expect, it } from 'vitest';
import { recordingGateway } from '../support/recording-gateway.js';
import { RecordingTapPort } from '../../src/vxlan/datapath-fake.js';
import type { VtepKind } from '../../src/model/vtep.js';

const ENC = { id: 'e', index: 2, vni: 4098, encrypted: true };
const PLAIN = { id: 'p', index: 1, vni: 4097, encrypted: false };
const MAC = '02:42:0a:00:00:07';

function setup(options: { vtep?: VtepKind; tap?: boolean } = {}) {
  const g = recordingGateway('kernel', options.vtep ? { vtep: options.vtep } : {});
  const tap = options.tap === false ? undefined : new RecordingTapPort();
  g.dataPath.tapPort = tap;
  const vtepOf = (vni: number) => g.gateway.status().networks.find((n) => n.vni === vni)?.vtep;
  return { ...g, tap, vtepOf };
}

describe('an encrypted network with a TAP port', () => {
  it('gets its port in the vtep netns on its bridge, and no kernel VXLAN device', async () => {
    const { gateway, plumbing, tap, vtepOf } = setup();
    await gateway.addNetwork(ENC);
    expect(tap!.ports.get(ENC.vni)).toEqual([plumbing.vtepNetnsFile, `tp${ENC.vni}`]);
    expect(plumbing.tapPorts.get(ENC.vni)).toBe(`tp${ENC.vni}`);
    expect(plumbing.networks.get(ENC.vni)).toMatchObject({ vtep: 'tap' });
    expect(vtepOf(ENC.vni)).toEqual({ kind: 'tap', offloads: true, macs: 0 });
  });

  it('floods to its peers and sends a remote MAC to its own peer in the data path, not the kernel FDB', async () => {
    const { gateway, plumbing, tap, peer, vtepOf } = setup();
    await gateway.addNetwork(ENC);
    await gateway.addNetwork(PLAIN);
    await gateway.addPeer(peer('h2', 2));
    await gateway.addPeer(peer('h3', 3));
    await gateway.addRemoteMac(ENC.vni, 'h3', MAC);
    await gateway.addRemoteMac(PLAIN.vni, 'h3', MAC);
    expect([...tap!.flood.get(ENC.vni)!].sort()).toEqual(['h2', 'h3']);
    expect(tap!.macs.get(ENC.vni)?.get(MAC)).toBe('h3');
    expect(plumbing.fdb.get(ENC.vni)).toEqual([]);
    // The plain network is the kernel's, whatever the encrypted one uses.
    expect(tap!.flood.has(PLAIN.vni)).toBe(false);
    expect(plumbing.gatewaysFor(PLAIN.vni, MAC)).toEqual(['198.18.0.3']);
    expect(vtepOf(ENC.vni)).toMatchObject({ kind: 'tap', macs: 1 });
    expect(vtepOf(PLAIN.vni)).toBeUndefined();

    await gateway.removePeer('h3');
    expect([...tap!.flood.get(ENC.vni)!]).toEqual(['h2']);
    expect(vtepOf(ENC.vni)).toMatchObject({ macs: 0 });
    await gateway.addPeer(peer('h3', 3));
    await gateway.addRemoteMac(ENC.vni, 'h3', MAC);
    await gateway.removeRemoteMac(ENC.vni, MAC);
    expect(tap!.macs.get(ENC.vni)?.has(MAC)).toBe(false);
    // Nothing of the kernel's to prune on it.
    expect(await gateway.pruneStaleFdb()).toBe(0);
  });

  it('adding the network again keeps its port', async () => {
    const { gateway, tap } = setup();
    await gateway.addNetwork(ENC);
    tap!.failAttach = 'would make a second port';
    await gateway.addNetwork(ENC);
    expect(tap!.ports.has(ENC.vni)).toBe(true);
  });

  it('removing the network forgets its port and MACs', async () => {
    const { gateway, peer, vtepOf } = setup();
    await gateway.addNetwork(ENC);
    await gateway.addPeer(peer('h2', 2));
    await gateway.addRemoteMac(ENC.vni, 'h2', MAC);
    await gateway.removeNetwork(ENC.vni);
    await gateway.addNetwork(ENC);
    expect(vtepOf(ENC.vni)).toMatchObject({ kind: 'tap', macs: 0 });
  });
});

describe('the kernel VXLAN device instead', () => {
  it('where the port cannot be made: the network still works, and status and log say why', async () => {
    const { gateway, plumbing, tap, peer, vtepOf, logged } = setup();
    tap!.failAttach = 'VEIL_ERR_NATIVE_IO: open /dev/net/tun for TAP tp4098: No such file or directory';
    await gateway.addNetwork(ENC);
    await gateway.addPeer(peer('h2', 2));
    expect(plumbing.networks.get(ENC.vni)).toMatchObject({ vtep: 'kernel' });
    expect(plumbing.tapPorts.has(ENC.vni)).toBe(false);
    expect(plumbing.fdb.get(ENC.vni)?.length).toBe(1); // h2's flood entry, in the kernel
    expect(tap!.flood.has(ENC.vni)).toBe(false);
    expect(vtepOf(ENC.vni)).toEqual({ kind: 'kernel', reason: tap!.failAttach });
    expect(logged.find((l) => l.level === 'warn')?.event).toMatch(/no TAP port/);
  });

  it('when --vtep kernel asks for it', async () => {
    const { gateway, tap, vtepOf } = setup({ vtep: 'kernel' });
    await gateway.addNetwork(ENC);
    expect(tap!.ports.size).toBe(0);
    expect(vtepOf(ENC.vni)).toEqual({ kind: 'kernel', reason: '--vtep kernel' });
  });

  it('on a data path without TAP ports (TypeScript)', async () => {
    const { gateway, plumbing, vtepOf } = setup({ tap: false });
    await gateway.addNetwork(ENC);
    expect(plumbing.networks.get(ENC.vni)).toMatchObject({ vtep: 'kernel' });
    expect(vtepOf(ENC.vni)).toEqual({ kind: 'kernel', reason: 'the TypeScript data path has no TAP port' });
  });
});
