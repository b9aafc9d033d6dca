import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCa } from '../../src/cli/ca.js';

const root = mkdtempSync(join(tmpdir(), 'veil-cli-ca-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function veilCa(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCa(argv, { out: (l) => out.push(l), err: (l) => err.push(l) });
  expect(out.join('\n') + err.join('\n')).not.toMatch(/PRIVATE KEY|BEGIN/);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('veil ca', () => {
  const dir = join(root, 'ca');

  it('init writes the CA and says what it wrote', async () => {
    const r = await veilCa('init', '--dir', dir, '--cn', 'lab CA', '--days', '100');
    expect(r.code).toBe(0);
    expect(r.out).toContain(`wrote ${join(dir, 'ca.crt')} (CA certificate)`);
    expect(r.out).toContain(`wrote ${join(dir, 'ca.key')} (private key, mode 0600)`);
    expect(r.out).toMatch(/subject {2}CN=lab CA/);
    expect(r.out).toMatch(/serial {3}[0-9A-F]{32}/);
    expect(r.out).toMatch(/valid {4}\S+ to \S+/);
    expect(statSync(join(dir, 'ca.key')).mode & 0o777).toBe(0o600);
  });

  it('init again fails with VEIL_ERR_CA_EXISTS (exit 1)', async () => {
    const r = await veilCa('init', '--dir', dir);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^veil ca: VEIL_ERR_CA_EXISTS: /);
  });

  it('issue --server with repeated --ip and --dns', async () => {
    const r = await veilCa(
      'issue',
      '--dir',
      dir,
      '--name',
      'gw1',
      '--server',
      '--ip',
      '10.0.0.1',
      '--ip',
      '::1',
      '--dns',
      'gw1.example',
      '--days',
      '30',
    );
    expect(r.code).toBe(0);
    expect(r.out).toContain(`wrote ${join(dir, 'gw1.crt')} (server certificate)`);
    expect(r.out).toMatch(/issuer {3}CN=lab CA/);
    expect(r.out).toMatch(/names {4}DNS:gw1\.example, IP Address:10\.0\.0\.1, IP Address:(0:0:0:0:0:0:0:1|::1)/);
    const cert = new X509Certificate(readFileSync(join(dir, 'gw1.crt')));
    expect(cert.checkIP('10.0.0.1')).toBe('10.0.0.1');
  });

  it('issue --client, its default 365 days cut to the 100 the CA has left', async () => {
    const r = await veilCa('issue', '--dir', dir, '--name', 'alice', '--client');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/subject {2}CN=alice/);
    const ca = new X509Certificate(readFileSync(join(dir, 'ca.crt')));
    const alice = new X509Certificate(readFileSync(join(dir, 'alice.crt')));
    expect(new Date(alice.validTo).getTime()).toBe(new Date(ca.validTo).getTime());
  });

  it('issue without a CA fails with VEIL_ERR_CA_MISSING (exit 1)', async () => {
    const r = await veilCa('issue', '--dir', join(root, 'none'), '--name', 'x', '--client');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/VEIL_ERR_CA_MISSING/);
  });

  it('issue with a bad IP fails with VEIL_ERR_CONFIG_INVALID (exit 1)', async () => {
    const r = await veilCa('issue', '--dir', dir, '--name', 'gw2', '--server', '--ip', '300.1.1.1');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/VEIL_ERR_CONFIG_INVALID.*300\.1\.1\.1/);
  });

  it.each([
    [[], /usage:/],
    [['frobnicate'], /unknown command "frobnicate"/],
    [['init'], /--dir DIR is required/],
    [['init', '--dir', 'x', '--bogus'], /bogus/],
    [['init', '--dir', 'x', '--name', 'n'], /belongs to "veil ca issue"/],
    [['init', '--dir', 'x', 'extra'], /positional/i],
    [['issue', '--dir', 'x', '--name', 'n'], /exactly one of --server and --client/],
    [['issue', '--dir', 'x', '--name', 'n', '--server', '--client'], /exactly one of --server and --client/],
    [['issue', '--dir', 'x', '--client'], /--name NAME is required/],
    [['issue', '--dir', 'x', '--name', 'n', '--server'], /at least one --ip or --dns/],
    [['issue', '--dir', 'x', '--name', 'n', '--client', '--ip', '10.0.0.1'], /for --server certificates/],
    [['issue', '--dir', 'x', '--name', 'n', '--client', '--days', '1.5'], /whole number/],
    [['issue', '--dir', 'x', '--name', 'n', '--client', '--cn', 'c'], /belongs to "veil ca init"/],
  ])('usage error (exit 2): %j', async (argv, message) => {
    const r = await veilCa(...argv);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
    expect(r.err).toContain('veil ca issue --dir DIR --name NAME');
  });

  it('help exits 0', async () => {
    expect(await veilCa('--help')).toMatchObject({ code: 0, out: expect.stringContaining('veil ca init') });
  });
});
