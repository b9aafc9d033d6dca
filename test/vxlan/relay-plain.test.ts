// A data path made for plain networks in the kernel (relayPlain: false, docs/plumbing.md "Plain
// networks") leaves UDP 4789 to the kernel and refuses a plain network, on both implementations.
import { randomInt } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { nodeAeadProvider } from '../../src/crypto/aead-node.js';
import { NativeDataPath } from '../../src/vxlan/native/datapath.js';
import { TsDataPath } from '../../src/vxlan/ts/datapath.js';
import { MemoryWire } from '../../src/vxlan/ts/io-memory.js';
import { VXLAN_PORT } from '../../src/vxlan/wire/constants.js';
import { vxlanDatagram } from '../support/esp-fixtures.js';
import { loopbackPeerNet, TestSockets } from '../support/udp.js';
import { waitUntil } from '../support/wait.js';

describe('TypeScript data path without plain relay', () => {
  it('binds no 4789, sends no plain VXLAN, and refuses a plain network', async () => {
    const wire = new MemoryWire();
    const underlay = wire.underlay('198.18.0.1');
    const dp = new TsDataPath({
      vtepAddress: '169.254.1.2',
      peerNet: '169.254.64.0',
      underlay,
      vtep: {
        open: async () => {},
        addPeer: async () => {},
        removePeer: async () => {},
        deliver: () => true,
        close: async () => {},
      },
      provider: nodeAeadProvider,
      relayPlain: false,
    });
    await dp.start();
    wire.inject({
      from: { address: '198.18.0.2', port: VXLAN_PORT },
      to: { address: '198.18.0.1', port: VXLAN_PORT },
      datagram: vxlanDatagram(7),
    });
    await waitUntil('the datagram settles', () => wire.settled(wire.counts.sent));
    expect(wire.counts.unreachable).toBe(1);
    expect(underlay.send(vxlanDatagram(7), '198.18.0.2', VXLAN_PORT)).toBe(false);
    expect(() => dp.setNetwork({ vni: 7, encrypted: false })).toThrow(/plain networks run in the kernel/);
    dp.setNetwork({ vni: 8, encrypted: true });
    await dp.stop();
  });
});

describe('native data path without plain relay', () => {
  const net = `127.${100 + randomInt(100)}.${randomInt(250)}`;
  const sockets = new TestSockets();
  const ports = { esp: 26500, plain: 26789, vtep: 26790, delivery: 0, gateway: 36003 };
  const dp = new NativeDataPath({
    underlayAddress: `${net}.1`,
    hostAddress: `${net}.2`,
    vtepAddress: `${net}.3`,
    peerNet: loopbackPeerNet(net),
    ports,
    relayPlain: false,
  });
  afterAll(async () => {
    await dp.stop();
    sockets.closeAll();
  });

  it('leaves the plain port free and refuses a plain network', async () => {
    await dp.start();
    // The port a relaying data path would hold is free: the kernel's VXLAN socket can have it.
    await sockets.bind(`${net}.1`, ports.plain);
    expect(() => dp.setNetwork({ vni: 7, encrypted: false })).toThrow(/plain networks run in the kernel/);
    dp.setNetwork({ vni: 8, encrypted: true });
    expect(dp.status().pairs).toEqual([]);
  });
});
