import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCa, issueCertificate, type IssuedCertificate } from '../../src/tls/ca.js';

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

const root = mkdtempSync(join(tmpdir(), 'veil-ca-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const mode = (path: string) => statSync(path).mode & 0o777;
const x509 = (path: string) => new X509Certificate(readFileSync(path));
const forgeCert = (path: string) => forge.pki.certificateFromPem(readFileSync(path, 'utf8'));

async function rejects(p: Promise<unknown>, code: string, detail?: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toMatchObject({ name: 'VeilError', code });
  if (detail) expect((err as Error).message).toMatch(detail);
}

describe('initCa', () => {
  const dir = join(root, 'ca-dir');
  let ca: IssuedCertificate;
  beforeAll(async () => {
    ca = await initCa(dir, { commonName: 'test CA', days: 30 });
  });

  it('writes a self-signed CA certificate and a 0600 key in a new 0700 directory', () => {
    expect(ca.certPath).toBe(join(dir, 'ca.crt'));
    expect(ca.keyPath).toBe(join(dir, 'ca.key'));
    expect(mode(dir)).toBe(0o700);
    expect(mode(ca.keyPath)).toBe(0o600);
    expect(mode(ca.certPath)).toBe(0o644);
    const cert = x509(ca.certPath);
    expect(cert.ca).toBe(true);
    expect(cert.subject).toBe('CN=test CA');
    expect(cert.checkIssued(cert)).toBe(true);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.checkPrivateKey(createPrivateKey(readFileSync(ca.keyPath)))).toBe(true);
    expect(createPrivateKey(readFileSync(ca.keyPath)).asymmetricKeyDetails?.modulusLength).toBe(2048);
    // 30 days, notBefore backdated 5 minutes for clock skew.
    expect(ca.notAfter.getTime() - ca.notBefore.getTime()).toBe(30 * 86_400_000 + 5 * 60_000);
  });

  it('marks the CA with critical basicConstraints (pathLen 0) and keyCertSign, SHA-256 signed', () => {
    const cert = forgeCert(ca.certPath);
    expect(cert.getExtension('basicConstraints')).toMatchObject({ cA: true, pathLenConstraint: 0, critical: true });
    expect(cert.getExtension('keyUsage')).toMatchObject({
      keyCertSign: true,
      cRLSign: true,
      digitalSignature: false,
      critical: true,
    });
    expect(cert.siginfo.algorithmOid).toBe(forge.pki.oids['sha256WithRSAEncryption']);
  });

  it('returns and describes no key material', () => {
    expect(JSON.stringify(ca)).not.toMatch(/PRIVATE KEY/);
  });

  it('refuses to overwrite a CA, even half of one', async () => {
    await rejects(initCa(dir), 'VEIL_ERR_CA_EXISTS');
    const half = join(root, 'half');
    await initCa(half);
    rmSync(join(half, 'ca.crt'));
    await rejects(initCa(half), 'VEIL_ERR_CA_EXISTS');
  });
});

describe('issueCertificate', () => {
  const dir = join(root, 'issuing');
  let caCert: X509Certificate;
  let server: IssuedCertificate;
  let client: IssuedCertificate;
  beforeAll(async () => {
    caCert = x509((await initCa(dir)).certPath);
    server = await issueCertificate(dir, {
      name: 'gw1',
      role: 'server',
      ips: ['127.0.0.1', '2001:db8::1', '::ffff:10.1.2.3'],
      dnsNames: ['gw1.example'],
    });
    client = await issueCertificate(dir, { name: 'operator', role: 'client', days: 7 });
  });

  it('signs certificates that chain to the CA, with keys of mode 0600', () => {
    for (const issued of [server, client]) {
      const cert = x509(issued.certPath);
      expect(cert.checkIssued(caCert)).toBe(true);
      expect(cert.verify(caCert.publicKey)).toBe(true);
      expect(cert.ca).toBe(false);
      expect(cert.checkPrivateKey(createPrivateKey(readFileSync(issued.keyPath)))).toBe(true);
      expect(mode(issued.keyPath)).toBe(0o600);
      expect(mode(issued.certPath)).toBe(0o644);
      expect(issued.issuer).toBe('CN=veil CA');
    }
    expect(server.keyPath).toBe(join(dir, 'gw1.key'));
    expect(client.subject).toBe('CN=operator');
  });

  it('gives a server serverAuth and its names, a client clientAuth and none', () => {
    const s = x509(server.certPath);
    expect(s.keyUsage).toEqual([SERVER_AUTH]);
    expect(s.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(s.checkIP('2001:db8::1')).toBe('2001:db8::1');
    expect(s.checkHost('gw1.example')).toBe('gw1.example');
    expect(s.checkHost('gw2.example')).toBeUndefined();
    expect(s.subjectAltName).toMatch(/DNS:gw1\.example/);
    const san = forgeCert(server.certPath).getExtension('subjectAltName') as {
      altNames: { type: number; ip?: string }[];
    };
    expect(san.altNames.filter((n) => n.type === 7).map((n) => n.ip)).toEqual([
      '127.0.0.1',
      '2001:db8::1',
      '::ffff:a01:203',
    ]);

    const c = x509(client.certPath);
    expect(c.keyUsage).toEqual([CLIENT_AUTH]);
    expect(c.subjectAltName).toBeUndefined();
    expect(client.notAfter.getTime() - client.notBefore.getTime()).toBe(7 * 86_400_000 + 5 * 60_000);
  });

  it('sets basicConstraints CA:false, digitalSignature+keyEncipherment, key identifiers, SHA-256', () => {
    const caSki = (
      forgeCert(join(dir, 'ca.crt')).getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier: string }
    ).subjectKeyIdentifier;
    for (const issued of [server, client]) {
      const cert = forgeCert(issued.certPath);
      expect(cert.getExtension('basicConstraints')).toMatchObject({ cA: false, critical: true });
      expect(cert.getExtension('keyUsage')).toMatchObject({
        digitalSignature: true,
        keyEncipherment: true,
        keyCertSign: false,
        critical: true,
      });
      expect(cert.getExtension('subjectKeyIdentifier')).toBeTruthy();
      // authorityKeyIdentifier: SEQUENCE { [0] keyIdentifier } naming the CA's key.
      const aki = cert.getExtension('authorityKeyIdentifier') as { value: string };
      expect(forge.util.bytesToHex(aki.value)).toBe(`30168014${caSki}`);
      expect(cert.siginfo.algorithmOid).toBe(forge.pki.oids['sha256WithRSAEncryption']);
    }
  });

  it('uses random positive 128-bit serials', async () => {
    const other = await issueCertificate(dir, { name: 'operator2', role: 'client' });
    for (const serial of [server.serial, client.serial, other.serial]) expect(serial).toMatch(/^[4-7][0-9A-F]{31}$/);
    expect(new Set([server.serial, client.serial, other.serial]).size).toBe(3);
  });

  it('refuses without a CA', async () => {
    await rejects(issueCertificate(join(root, 'empty'), { name: 'x', role: 'client' }), 'VEIL_ERR_CA_MISSING');
  });

  it.each([
    ['a name that is a path', { name: '../x', role: 'client' }, /certificate name/],
    ["the CA's own name", { name: 'ca', role: 'client' }, /certificate name/],
    ['a server without names', { name: 's', role: 'server' }, /at least one IP/],
    ['a client with names', { name: 'c', role: 'client', ips: ['10.0.0.1'] }, /server certificates/],
    ['a bad IP', { name: 's', role: 'server', ips: ['10.0.0.256'] }, /IP address/],
    ['an IPv6 zone', { name: 's', role: 'server', ips: ['fe80::1%eth0'] }, /IP address/],
    ['a bad DNS name', { name: 's', role: 'server', dnsNames: ['-bad.example'] }, /DNS name/],
    ['a name already issued', { name: 'gw1', role: 'server', ips: ['127.0.0.1'] }, /already exists/],
    ["a validity beyond the CA's", { name: 'long', role: 'client', days: 36_500 }, /outlive the CA/],
    ['zero days', { name: 'z', role: 'client', days: 0 }, /days/],
  ] as const)('refuses %s', async (_what, options, detail) => {
    await rejects(
      issueCertificate(dir, {
        ...options,
        ips: [...('ips' in options ? options.ips : [])],
        dnsNames: [...('dnsNames' in options ? options.dnsNames : [])],
      }),
      'VEIL_ERR_CONFIG_INVALID',
      detail,
    );
  });

  it('refuses a CA key that does not match its certificate', async () => {
    const mixed = join(root, 'mixed');
    await initCa(mixed);
    writeFileSync(join(mixed, 'ca.key'), readFileSync(join(dir, 'ca.key')));
    await rejects(issueCertificate(mixed, { name: 'x', role: 'client' }), 'VEIL_ERR_CONFIG_INVALID', /does not belong/);
  });
});
