// Both data paths, made alike, for the tests that give them the same table changes (sa-parity,
// network-churn); and I/O that goes nowhere, for a TypeScript path driven by its tables alone.
import { nodeAeadProvider } from '../../src/crypto/aead-node.js';
import { NativeDataPath, type NativeDataPathOptions } from '../../src/vxlan/native/datapath.js';
import { TsDataPath } from '../../src/vxlan/ts/datapath.js';
import type { UnderlayIo, VtepIo } from '../../src/vxlan/ts/io.js';

export const nullUnderlay: UnderlayIo = { open: async () => {}, send: () => true, close: async () => {} };
export const nullVtep: VtepIo = {
  open: async () => {},
  addPeer: async () => {},
  removePeer: async () => {},
  deliver: () => true,
  close: async () => {},
};

/** A TypeScript path with null I/O and a native one on loopback, both on the same addresses and peer net. */
export function bothDataPaths(o: {
  addresses: { underlay: string; host: string; vtep: string };
  peerNet: string;
  ports: NativeDataPathOptions['ports'];
}): { ts: TsDataPath; native: NativeDataPath } {
  return {
    ts: new TsDataPath({
      vtepAddress: o.addresses.vtep,
      peerNet: o.peerNet,
      underlay: nullUnderlay,
      vtep: nullVtep,
      provider: nodeAeadProvider,
    }),
    native: new NativeDataPath({
      underlayAddress: o.addresses.underlay,
      hostAddress: o.addresses.host,
      vtepAddress: o.addresses.vtep,
      peerNet: o.peerNet,
      ports: o.ports,
    }),
  };
}
