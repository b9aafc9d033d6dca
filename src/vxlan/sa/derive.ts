import type { AeadProvider } from '../../crypto/aead.js';
import { deriveSaKeymat } from '../../crypto/sa-keys.js';
import type { SecretKey } from '../../crypto/secret.js';
import { createEspCipher } from '../wire/esp.js';
import type { SaKeySpec } from '../datapath.js';
import { InboundSa, OutboundSa } from './sa.js';
import { encodeSpi } from '../wire/spi.js';

/** A host as key derivation sees it. */
export interface SaHost {
  readonly id: string;
  /** Allocated once (etcd); 1..16383, part of the SPI. */
  readonly index: number;
  readonly publicKey: Uint8Array;
  /** Random per start of that host's gateway. */
  readonly incarnation: string;
}

export interface SaNetworkEpoch {
  readonly networkId: string;
  /** Allocated once (etcd); 0..65535, part of the SPI. */
  readonly networkIndex: number;
  readonly vni: number;
  readonly epoch: number;
  readonly secret: SecretKey;
}

export interface SaOptions {
  provider: AeadProvider;
  /** Packets an outbound SA may seal before it must be replaced (default: the ESN limit). */
  sequenceBudget?: number;
  replayWindow?: number;
}

/**
 * KEYMAT and SPI of both SAs between this host and one peer for one network
 * epoch (ESN always on): outbound self → peer, named at the peer by
 * SPI(epoch, self, network), and inbound peer → self, named here by
 * SPI(epoch, peer, network). The caller wipes the keymats once installed.
 */
export function deriveSaKeySpecs(
  self: SaHost,
  selfPrivateKey: SecretKey,
  peer: SaHost,
  net: SaNetworkEpoch,
): { outbound: SaKeySpec; inbound: SaKeySpec } {
  const base = { networkId: net.networkId, vni: net.vni, networkIndex: net.networkIndex, epoch: net.epoch };
  const where = { esn: true, vni: net.vni, peerId: peer.id, epoch: net.epoch };
  return {
    outbound: {
      ...where,
      spi: encodeSpi(net.epoch, self.index, net.networkIndex),
      keymat: deriveSaKeymat(net.secret, selfPrivateKey, peer.publicKey, {
        ...base,
        senderId: self.id,
        receiverId: peer.id,
        senderIncarnation: self.incarnation,
        receiverIncarnation: peer.incarnation,
      }),
    },
    inbound: {
      ...where,
      spi: encodeSpi(net.epoch, peer.index, net.networkIndex),
      keymat: deriveSaKeymat(net.secret, selfPrivateKey, peer.publicKey, {
        ...base,
        senderId: peer.id,
        receiverId: self.id,
        senderIncarnation: peer.incarnation,
        receiverIncarnation: self.incarnation,
      }),
    },
  };
}

/** Both SAs as TypeScript objects (SaTable, tests): deriveSaKeySpecs with the given AEAD provider. */
export function deriveSaPair(
  self: SaHost,
  selfPrivateKey: SecretKey,
  peer: SaHost,
  net: SaNetworkEpoch,
  options: SaOptions,
): { outbound: OutboundSa; inbound: InboundSa } {
  const specs = deriveSaKeySpecs(self, selfPrivateKey, peer, net);
  const label = { peerId: peer.id, epoch: net.epoch };
  const outbound = new OutboundSa(
    createEspCipher(specs.outbound.spi, specs.outbound.keymat, true, options.provider),
    net.vni,
    options.sequenceBudget,
    label,
  );
  const inbound = new InboundSa(
    createEspCipher(specs.inbound.spi, specs.inbound.keymat, true, options.provider),
    net.vni,
    options.replayWindow,
    label,
  );
  specs.outbound.keymat.wipe();
  specs.inbound.keymat.wipe();
  return { outbound, inbound };
}
