// A Gateway on the recording fakes (no host, no sockets), as the gateway unit tests drive it: host h1
// at 198.18.0.1, and peers made to order.
import { generateX25519KeyPair } from '../../src/crypto/x25519.js';
import { DEFAULT_PEER_NET } from '../../src/model/peer-net.js';
import type { PlainPath } from '../../src/model/plain-path.js';
import type { VtepKind } from '../../src/model/vtep.js';
import { RecordingDataPath } from '../../src/vxlan/datapath-fake.js';
import { Gateway } from '../../src/vxlan/gateway.js';
import { RecordingPlumbing } from '../../src/vxlan/plumbing-fake.js';

export function recordingGateway(plainPath: PlainPath = 'gateway', options: { vtep?: VtepKind } = {}) {
  const plumbing = new RecordingPlumbing('169.254.1.1', '169.254.1.2', DEFAULT_PEER_NET, plainPath);
  const dataPath = new RecordingDataPath();
  const me = generateX25519KeyPair();
  const logged: Array<{ event: string; fields?: Record<string, unknown>; level: 'info' | 'warn' }> = [];
  const gateway = new Gateway({
    self: { id: 'h1', index: 1, address: '198.18.0.1', publicKey: me.publicKey, incarnation: 'a' },
    privateKey: me.privateKey,
    plumbing,
    dataPath,
    ...(options.vtep ? { vtep: options.vtep } : {}),
    log: (event, fields, level) => logged.push({ event, fields, level: level ?? 'info' }),
  });
  /** A peer with a fresh key; its underlay address 198.18.0.<index> unless given. */
  const peer = (id: string, index: number, address = `198.18.0.${index}`) => ({
    id,
    index,
    address,
    publicKey: generateX25519KeyPair().publicKey,
    incarnation: 'b',
  });
  return { gateway, plumbing, dataPath, peer, logged };
}
