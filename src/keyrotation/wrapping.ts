import { hexToBytes } from '../crypto/bytes.js';
import { unwrapSecret, wrapSecret } from '../crypto/keywrap.js';
import type { SecretKey } from '../crypto/secret.js';
import type { HostRecord, KeyEpochRecord } from '../store/types.js';

/*
 * The epoch secret as etcd holds it: wrapped for each member host (crypto/keywrap.ts,
 * AAD = network, epoch, host), base64 in KeyEpochRecord.wrapped (docs/keys.md "Key wrap").
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
  /** not-member: the record holds no copy for this host; key-unavailable: the copy does not open with this host's key. */
  | { ok: false; why: 'not-member' | 'key-unavailable' };

/** This host's copy of the record's secret. Never throws. */
export function unwrapForSelf(record: KeyEpochRecord, self: HostIdentity): Unwrapped {
  const mine = Object.hasOwn(record.wrapped, self.hostId) ? record.wrapped[self.hostId] : undefined;
  if (mine === undefined) return { ok: false, why: 'not-member' };
  try {
    const secret = unwrapSecret(Buffer.from(mine, 'base64'), self.privateKey, {
      networkId: record.networkId,
      epoch: record.epoch,
      hostId: self.hostId,
    });
    return secret && secret.length === EPOCH_SECRET_LENGTH
      ? { ok: true, secret }
      : { ok: false, why: 'key-unavailable' };
  } catch {
    return { ok: false, why: 'key-unavailable' };
  }
}
