// Deliveries to the VTEP leave from hostAddress:1022, the one source the vtep namespace's firewall
// admits (docs/plumbing.md "No local injection"). Binding 1022 needs CAP_NET_BIND_SERVICE: system tier.
import { randomInt } from 'node:crypto';
import type dgram from 'node:dgram';
import { afterAll, expect, it } from 'vitest';
import { NativeDataPath } from '../../../src/vxlan/native/datapath.js';
import { VTEP_DELIVERY_PORT } from '../../../src/vxlan/wire/constants.js';
import { vxlanDatagram } from '../../support/esp-fixtures.js';
import { loopbackPeerNet, TestSockets } from '../../support/udp.js';
import { waitUntil } from '../../support/wait.js';

const NET = `127.${100 + randomInt(100)}.${randomInt(250)}`;
const A = { underlay: `${NET}.11`, host: `${NET}.12`, vtep: `${NET}.13`, peer: `${NET}.14` };
const PORTS = { esp: 26500, plain: 26789, vtep: 26790, peerEsp: 26501, peerPlain: 26791, gateway: 36003 };
const PLAIN = 4097;

const sockets = new TestSockets();
let dp: NativeDataPath | undefined;
afterAll(async () => {
  await dp?.stop();
  sockets.closeAll();
});

it("a plain network's frame reaches the VTEP from hostAddress:1022", async () => {
  dp = new NativeDataPath({
    underlayAddress: A.underlay,
    hostAddress: A.host,
    vtepAddress: A.vtep,
    peerNet: loopbackPeerNet(NET),
    ports: {
      esp: PORTS.esp,
      plain: PORTS.plain,
      vtep: PORTS.vtep,
      peerEsp: PORTS.peerEsp,
      peerPlain: PORTS.peerPlain,
      gateway: PORTS.gateway,
    },
  });
  await dp.start();
  await dp.addPeer({ id: 'h3', index: 3, address: A.peer });
  dp.setNetwork({ vni: PLAIN, encrypted: false });
  const vtep = await sockets.bind(A.vtep, PORTS.vtep);
  const peer = await sockets.bind(A.peer, PORTS.peerPlain);
  const from: dgram.RemoteInfo[] = [];
  vtep.on('message', (_: Buffer, r: dgram.RemoteInfo) => from.push(r));
  peer.send(vxlanDatagram(PLAIN), PORTS.plain, A.underlay);
  await waitUntil('a delivery', () => from.length > 0, 5_000);
  expect(from[0]).toMatchObject({ address: A.host, port: VTEP_DELIVERY_PORT });
});
