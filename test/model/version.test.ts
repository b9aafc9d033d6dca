import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { sameReleaseLine, VERSION } from '../../src/model/version.js';

describe('sameReleaseLine', () => {
  it.each([
    ['0.2.0', '0.2.7', true],
    ['0.2.0', '0.1.0', false],
    ['1.2.0', '1.9.3', true],
    ['1.0.0', '2.0.0', false],
    ['0.2.0-rc.1', '0.2.0', true],
    ['dev', 'dev', true],
    ['dev', '0.2.0', false],
  ])('%s and %s → %s', (a, b, same) => {
    expect(sameReleaseLine(a, b)).toBe(same);
    expect(sameReleaseLine(b, a)).toBe(same);
  });

  it('VERSION is the package version', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(VERSION).toBe(pkg.version);
  });
});
