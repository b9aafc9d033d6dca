// docs/keys.md "SA keys", written out again with node:crypto alone (nothing of src/crypto/), so that
// a test deriving keys with it proves the documented formula is the one the gateways use:
//
//   KEYMAT = HKDF-SHA256(ikm  = epoch secret ‖ X25519(sender, receiver),
//                        salt = empty,
//                        info = "veil esp v2" ‖ lp(network id) ‖ u64(VNI) ‖ u64(network index) ‖ u64(epoch)
//                               ‖ lp(sender) ‖ lp(receiver) ‖ lp(incarnation(sender)) ‖ lp(incarnation(receiver)),
//                        L    = 20)     → AES-128-GCM key (16) ‖ salt (4)
//
// lp(x): the UTF-8 bytes of x after their length as 2 bytes big-endian; u64(n): 8 bytes big-endian.
import { createPrivateKey, createPublicKey, diffieHellman, hkdfSync } from 'node:crypto';

/** RFC 8410 §7 / RFC 5958: the DER an X25519 private key of 32 raw bytes sits in (PKCS #8). */
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
/** RFC 8410 §4: the DER an X25519 public key of 32 raw bytes sits in (SubjectPublicKeyInfo). */
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

export interface DocumentedKeyContext {
  networkId: string;
  vni: number;
  networkIndex: number;
  epoch: number;
  sender: string;
  receiver: string;
  senderIncarnation: string;
  receiverIncarnation: string;
}

function lp(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const length = Buffer.alloc(2);
  length.writeUInt16BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

function u64(n: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64BE(BigInt(n));
  return out;
}

/** X25519 of one end's 32-byte private key with the other end's 32-byte public key (RFC 7748 §6.1). */
export function x25519Raw(privateKey: Uint8Array, publicKey: Uint8Array): Buffer {
  return diffieHellman({
    privateKey: createPrivateKey({
      key: Buffer.concat([PKCS8_X25519_PREFIX, privateKey]),
      format: 'der',
      type: 'pkcs8',
    }),
    publicKey: createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, publicKey]), format: 'der', type: 'spki' }),
  });
}

/** The KEYMAT of the SA sender → receiver, from one end's private key and the other end's public key. */
export function documentedKeymat(
  epochSecret: Uint8Array,
  ownPrivateKey: Uint8Array,
  peerPublicKey: Uint8Array,
  ctx: DocumentedKeyContext,
): Buffer {
  const info = Buffer.concat([
    Buffer.from('veil esp v2', 'utf8'),
    lp(ctx.networkId),
    u64(ctx.vni),
    u64(ctx.networkIndex),
    u64(ctx.epoch),
    lp(ctx.sender),
    lp(ctx.receiver),
    lp(ctx.senderIncarnation),
    lp(ctx.receiverIncarnation),
  ]);
  const ikm = Buffer.concat([epochSecret, x25519Raw(ownPrivateKey, peerPublicKey)]);
  return Buffer.from(hkdfSync('sha256', ikm, Buffer.alloc(0), info, 20));
}
