import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesToHex, hexToBytes } from '../crypto/bytes.js';
import { SecretKey } from '../crypto/secret.js';
import { generateX25519KeyPair, x25519, X25519_KEY_LENGTH, type X25519KeyPair } from '../crypto/x25519.js';
import { VeilError } from '../errors.js';

/*
 * The host's static X25519 identity (docs/keys.md "Host identity"): made once, kept in the data
 * directory like an SSH host key (mode 0600), and kept across restarts and clean
 * shutdowns. Its public half goes into the host's etcd record.
 */

export const IDENTITY_FILE = 'identity.key';

export function loadOrCreateIdentity(dataDir: string): X25519KeyPair & { created: boolean } {
  const path = join(dataDir, IDENTITY_FILE);
  if (!existsSync(path)) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const pair = generateX25519KeyPair();
    writeFileSync(path, bytesToHex(pair.privateKey.exposeDanger()) + '\n', { mode: 0o600, flag: 'wx' });
    chmodSync(path, 0o600);
    return { ...pair, created: true };
  }
  if ((statSync(path).mode & 0o077) !== 0) throw new VeilError('VEIL_ERR_CONFIG_INSECURE', `${path} (chmod 600 it)`);
  const hex = readFileSync(path, 'utf8').trim();
  if (!/^[0-9a-f]{64}$/.test(hex))
    throw new VeilError('VEIL_ERR_CONFIG_INVALID', `${path} must hold ${X25519_KEY_LENGTH} bytes of hex`);
  const privateKey = new SecretKey(hexToBytes(hex));
  return { privateKey, publicKey: x25519.publicKey(privateKey), created: false };
}
