import { concatBytes, lengthPrefixed, u64Bytes, utf8Bytes } from './bytes.js';
import { hkdfSha256, type HkdfSha256 } from './hkdf.js';
import { SecretKey } from './secret.js';
import { x25519, type X25519 } from './x25519.js';

/*
 * ESP keys for one direction between two hosts on one network and epoch (docs/keys.md "SA keys"):
 *
 *   KEYMAT = HKDF-SHA256(ikm  = epochSecret || X25519(sender, receiver),
 *                        salt = "",
 *                        info = LABEL || lp(network) || u64(vni) || u64(network index) || u64(epoch)
 *                               || lp(sender) || lp(receiver)
 *                               || lp(incarnation(sender)) || lp(incarnation(receiver)),
 *                        L    = 16 + 4)        AES-128 key || salt (RFC 4106 §8.1)
 *
 * Consequences, each tested:
 *  - per direction and per pair: no two senders ever share a (key, nonce) space;
 *  - per network as the data plane names it: the VNI and the network index (the SPI's field) enter
 *    the info beside the network's id, so no configuration that repeats an id can give two SAs one key;
 *  - X25519 of the two hosts' static keys enters the IKM, so a third member that
 *    knows the epoch secret still cannot derive keys between two other hosts;
 *  - the sender's incarnation (random per start) enters the info, so a restarted
 *    gateway whose counter starts again at 1 uses a new key;
 *  - the receiver's incarnation enters it too (docs/keys.md "SA keys"): a restarted receiver
 *    has an empty replay window, so without it the traffic recorded earlier in the
 *    epoch could be replayed into it; with it, a restart of either end changes the
 *    keys of both directions.
 */

/** v2: the VNI and the network index joined the info (v1 had neither). */
export const SA_KEY_LABEL = 'veil esp v2';
/** AES-128-GCM (16-byte key) + 4-byte salt. */
export const SA_KEYMAT_LENGTH = 20;

export interface SaKeyContext {
  networkId: string;
  /** The network's VNI and its index (the SPI's network field). */
  vni: number;
  networkIndex: number;
  epoch: number;
  senderId: string;
  receiverId: string;
  /** The sender's incarnation, drawn at its start. */
  senderIncarnation: string;
  /** The receiver's incarnation. */
  receiverIncarnation: string;
}

export interface SaKeyDeps {
  x25519: X25519;
  hkdf: HkdfSha256;
}

const defaultDeps: SaKeyDeps = { x25519, hkdf: hkdfSha256 };

export class SaKeyError extends Error {
  override readonly name = 'SaKeyError';
}

function info(ctx: SaKeyContext): Uint8Array {
  return concatBytes(
    utf8Bytes(SA_KEY_LABEL),
    lengthPrefixed(ctx.networkId),
    u64Bytes(ctx.vni),
    u64Bytes(ctx.networkIndex),
    u64Bytes(ctx.epoch),
    lengthPrefixed(ctx.senderId),
    lengthPrefixed(ctx.receiverId),
    lengthPrefixed(ctx.senderIncarnation),
    lengthPrefixed(ctx.receiverIncarnation),
  );
}

/**
 * The KEYMAT of the SA sender → receiver. Either end computes it: the sender with
 * (its private key, the receiver's public key), the receiver with (its private
 * key, the sender's public key); X25519 gives both the same shared secret.
 */
export function deriveSaKeymat(
  epochSecret: SecretKey,
  ownPrivateKey: SecretKey,
  peerPublicKey: Uint8Array,
  ctx: SaKeyContext,
  deps: SaKeyDeps = defaultDeps,
): SecretKey {
  const shared = deps.x25519.sharedSecret(ownPrivateKey, peerPublicKey);
  if (!shared) throw new SaKeyError(`peer public key of ${ctx.senderId}→${ctx.receiverId} is of low order`);
  const ikm = concatBytes(epochSecret.exposeDanger(), shared.exposeDanger());
  const keymat = new SecretKey(deps.hkdf.derive(ikm, new Uint8Array(0), info(ctx), SA_KEYMAT_LENGTH));
  ikm.fill(0);
  shared.wipe();
  return keymat;
}
