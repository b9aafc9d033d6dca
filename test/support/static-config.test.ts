import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { VeilError } from '../../src/errors.js';
import { loadStaticGatewayConfig, parseStaticGatewayConfig } from './static-config.js';

const KEY = 'ab'.repeat(32);
const valid = () => ({
  host: { id: 'h1', index: 1, address: '198.18.0.1', privateKey: KEY, incarnation: 'i1' },
  vtep: { netns: 'vtep-h1' },
  peers: [{ id: 'h2', index: 2, address: '198.18.0.2', publicKey: 'cd'.repeat(32), incarnation: 'i2' }],
  networks: [
    { id: 'enc', index: 1, vni: 4096, encrypted: true, epoch: 1, secret: 'ef'.repeat(32) },
    { id: 'plain', index: 2, vni: 4097, encrypted: false },
  ],
});

const dir = mkdtempSync(join(tmpdir(), 'veil-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('static gateway configuration', () => {
  it('parses a valid file; keys stay redacted', () => {
    const c = parseStaticGatewayConfig(valid());
    expect(c.underlayMtu).toBe(1500);
    expect(c.networks[0]!.key?.epoch).toBe(1);
    expect(inspect(c)).not.toContain('abab');
    expect(JSON.stringify(c)).not.toContain('efef');
  });

  const bad: Array<[string, (c: ReturnType<typeof valid>) => void, RegExp]> = [
    ['bad address', (c) => (c.host.address = '198.18.0.256'), /host\.address/],
    ['short private key', (c) => (c.host.privateKey = 'ab'), /host\.privateKey: must be 32 bytes/],
    ['host index 0', (c) => (c.host.index = 0), /host\.index/],
    ['duplicate peer index', (c) => (c.peers[0]!.index = 1), /peers\[0\]\.index: 1 appears twice/],
    ['duplicate VNI', (c) => (c.networks[1]!.vni = 4096), /networks\[1\]\.vni/],
    // A copied block with only vni (and maybe index) changed: the same key for two SPIs otherwise.
    ['duplicate network id', (c) => (c.networks[1]!.id = 'enc'), /networks\[1\]\.id: "enc" appears twice/],
    ['duplicate network index', (c) => (c.networks[1]!.index = 1), /networks\[1\]\.index: 1 appears twice/],
    [
      'key on a plain network',
      (c) => Object.assign(c.networks[1]!, { epoch: 1, secret: KEY }),
      /a plain network has no key/,
    ],
    ['VNI out of range', (c) => (c.networks[0]!.vni = 2 ** 24), /networks\[0\]\.vni/],
  ];
  for (const [what, mutate, message] of bad) {
    it(`refuses ${what} with a message naming the field`, () => {
      const c = valid();
      mutate(c);
      expect(() => parseStaticGatewayConfig(c)).toThrow(message);
      try {
        parseStaticGatewayConfig(c);
      } catch (err) {
        expect(err).toBeInstanceOf(VeilError);
        expect((err as VeilError).code).toBe('VEIL_ERR_CONFIG_INVALID');
        expect((err as Error).message).not.toContain(KEY);
      }
    });
  }

  it('refuses a file that others can read, since it holds keys', () => {
    const path = join(dir, 'open.json');
    writeFileSync(path, JSON.stringify(valid()));
    chmodSync(path, 0o644);
    expect(() => loadStaticGatewayConfig(path)).toThrow(/VEIL_ERR_CONFIG_INSECURE|readable by others/);
    chmodSync(path, 0o600);
    expect(loadStaticGatewayConfig(path).host.id).toBe('h1');
  });
});
