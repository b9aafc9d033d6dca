import { hexToBytes } from '../crypto/bytes.js';
import { unwrapSecret, wrapSecret } from '../crypto/keywrap.js';
import type { SecretKey } from '../crypto/secret.js';
import type { HostRecord } from '../store/types.js';

/*
 * The epoch secret as etcd holds it: wrapped for each member host (crypto/keywrap.ts,
 * AAD = network, epoch, host), base64, one key per copy (docs/keys.md "Key wrap").
 */

/** An epoch secret is 32 random bytes (docs/keys.md "Epoch secrets"). */
export const EPOCH_SECRET_LENGTH = 32;

export interface HostIdentity {
  hostId: string;
  /** This host's static X25519 private key. */
  privateKey: SecretKey;
}

/** The secret wrapped for one host, base64. Throws when the host's public key is unusable. */
export function wrapForHost(
  secret: SecretKey,
  host: Pick<HostRecord, 'id' | 'publicKey'>,
  networkId: string,
  epoch: number,
): string {
  const wrapped = wrapSecret(secret, hexToBytes(host.publicKey), { networkId, epoch, hostId: host.id });
  return Buffer.from(wrapped).toString('base64');
}

export type Unwrapped =
  | { ok: true; secret: SecretKey }
  /** not-member: etcd holds no copy for this host; key-unavailable: the copy does not open with this host's key. */
  | { ok: false; why: 'not-member' | 'key-unavailable' };

/** Opens this host's copy (Store.getCopy; null when it holds none) of an epoch's secret. Never throws. */
export function unwrapForSelf(
  copy: string | null,
  epoch: { networkId: string; epoch: number },
  self: HostIdentity,
): Unwrapped {
  if (copy === null) return { ok: false, why: 'not-member' };
  try {
    const secret = unwrapSecret(Buffer.from(copy, 'base64'), self.privateKey, {
      networkId: epoch.networkId,
      epoch: epoch.epoch,
      hostId: self.hostId,
    });
    return secret && secret.length === EPOCH_SECRET_LENGTH
      ? { ok: true, secret }
      : { ok: false, why: 'key-unavailable' };
  } catch {
    return { ok: false, why: 'key-unavailable' };
  }
}
