import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import forge from 'node-forge';
import { initCa, issueCertificate } from '../../src/tls/ca.js';

export interface KeyPair {
  cert: string;
  key: string;
}

export interface TestPki {
  /** The veil CA's certificate (PEM file path). */
  caCert: string;
  /** gw1: server certificate for 127.0.0.1 and localhost. */
  server: KeyPair;
  /** operator: client certificate from the veil CA. */
  client: KeyPair;
  /** intruder: client certificate from another CA. */
  foreignClient: KeyPair;
  /** The veil CA itself: valid chain, but no clientAuth EKU. */
  ca: KeyPair;
  /** A leaf from the veil CA with no extendedKeyUsage at all (OpenSSL's purpose check lets it through). */
  noEkuClient: KeyPair;
}

/** A veil CA with a server and a client certificate, and a second CA with its own client. */
export async function makePki(root: string): Promise<TestPki> {
  const dir = join(root, 'veil-ca');
  const other = join(root, 'other-ca');
  await initCa(dir);
  await initCa(other, { commonName: 'other CA' });
  const server = await issueCertificate(dir, {
    name: 'gw1',
    role: 'server',
    ips: ['127.0.0.1'],
    dnsNames: ['localhost'],
  });
  const client = await issueCertificate(dir, { name: 'operator', role: 'client' });
  const foreign = await issueCertificate(other, { name: 'intruder', role: 'client' });
  return {
    caCert: join(dir, 'ca.crt'),
    server: { cert: server.certPath, key: server.keyPath },
    client: { cert: client.certPath, key: client.keyPath },
    foreignClient: { cert: foreign.certPath, key: foreign.keyPath },
    ca: { cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') },
    noEkuClient: leafWithoutEku(dir, 'no-eku'),
  };
}

/** What `veil ca issue` never makes: a CA-signed leaf with keyUsage but no extKeyUsage. */
function leafWithoutEku(dir: string, name: string): KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const caCert = forge.pki.certificateFromPem(readFileSync(join(dir, 'ca.crt'), 'utf8'));
  const caKey = forge.pki.privateKeyFromPem(readFileSync(join(dir, 'ca.key'), 'utf8'));
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }) as string);
  cert.serialNumber = '01';
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 86_400_000);
  cert.setSubject([{ name: 'commonName', value: name }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  const pair = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  writeFileSync(pair.cert, forge.pki.certificateToPem(cert));
  writeFileSync(pair.key, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return pair;
}

export const pem = (path: string): Buffer => readFileSync(path);
