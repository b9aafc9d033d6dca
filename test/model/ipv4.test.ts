import { describe, expect, it } from 'vitest';
import {
  cidrContains,
  cidrsOverlap,
  formatIpv4,
  isIpv4,
  overlaySubnetRefusal,
  parseCidr,
  parseIpv4,
} from '../../src/model/ipv4.js';

describe('the IPv4 and CIDR parser', () => {
  it('reads dotted quads in canonical decimal only', () => {
    expect(formatIpv4(parseIpv4('10.1.2.3')!)).toBe('10.1.2.3');
    expect(parseIpv4('255.255.255.255')).toBe(2 ** 32 - 1);
    expect(parseIpv4('0.0.0.0')).toBe(0);
    for (const bad of [
      '10.1.2',
      '10.1.2.3.4',
      '01.1.2.3',
      '10.1.2.256',
      '10.1.2.-1',
      ' 10.1.2.3',
      '10.1.2.3 ',
      '1e1.1.1.1',
      '',
      'a.b.c.d',
    ]) {
      expect(parseIpv4(bad), bad).toBeUndefined();
      expect(isIpv4(bad), bad).toBe(false);
    }
  });

  it('reads prefixes with the address as written and the network it names', () => {
    expect(parseCidr('10.0.0.0/27')).toEqual({
      address: parseIpv4('10.0.0.0'),
      prefixLength: 27,
      first: parseIpv4('10.0.0.0'),
      last: parseIpv4('10.0.0.31'),
    });
    const host = parseCidr('169.254.47.1/30')!;
    expect([formatIpv4(host.address), formatIpv4(host.first), formatIpv4(host.last)]).toEqual([
      '169.254.47.1',
      '169.254.47.0',
      '169.254.47.3',
    ]);
    expect(parseCidr('0.0.0.0/0')).toMatchObject({ first: 0, last: 2 ** 32 - 1 });
    expect(parseCidr('10.0.0.5/32')).toMatchObject({ first: parseIpv4('10.0.0.5'), last: parseIpv4('10.0.0.5') });
    for (const bad of [
      '10.0.0.0/33',
      '10.0.0.0/',
      '10.0.0.0',
      '10.0.0.0/24/1',
      '10.0.0/24',
      '10.0.0.0/024',
      '10.0.0.0/-1',
    ]) {
      expect(parseCidr(bad), bad).toBeUndefined();
    }
  });

  it('answers containment and overlap', () => {
    const a = parseCidr('10.0.0.0/24')!;
    expect(cidrContains(a, parseIpv4('10.0.0.255')!)).toBe(true);
    expect(cidrContains(a, parseIpv4('10.0.1.0')!)).toBe(false);
    expect(cidrsOverlap(a, parseCidr('10.0.0.128/25')!)).toBe(true);
    expect(cidrsOverlap(a, parseCidr('10.0.1.0/24')!)).toBe(false);
  });
});

describe('subnets an overlay cannot use', () => {
  const refusal = (text: string) => overlaySubnetRefusal(parseCidr(text)!);

  it('refuses every special-purpose range it touches, saying which and why', () => {
    expect(refusal('0.0.0.0/0')).toMatch(
      /^0\.0\.0\.0\/0 overlaps 0\.0\.0\.0\/8 \(it covers every address\), "this network"/,
    );
    expect(refusal('127.0.0.0/8')).toMatch(/loopback/);
    expect(refusal('169.254.1.0/24')).toMatch(/link-local/);
    expect(refusal('168.0.0.0/6')).toMatch(/169\.254\.0\.0\/16/);
    expect(refusal('224.0.0.0/24')).toMatch(/multicast/);
    expect(refusal('255.255.255.255/32')).toMatch(/broadcast/);
  });

  it('takes private, shared and documentation space', () => {
    for (const ok of [
      '10.0.0.0/8',
      '172.16.0.0/12',
      '192.168.0.0/16',
      '100.64.0.0/10',
      '198.18.0.0/15',
      '203.0.113.0/24',
      '1.0.0.0/8',
    ]) {
      expect(refusal(ok), ok).toBeUndefined();
    }
  });
});
