import { describe, expect, it } from 'vitest';
import { HOST_INDEX_MAX, NETWORK_INDEX_MAX, VNI_ALLOCATION_MIN, VNI_MAX } from '../../src/model/ids.js';
import { parseIpv4 } from '../../src/model/ipv4.js';
import { SHARED_RANGE, inKeyRange, keys, parseKey, prefixEnd, PREFIX } from '../../src/store/layout.js';
import { allocRange, isAllocatable, macFromIpv4, pickFree, pickFreeIp } from '../../src/store/logic.js';

describe('etcd key layout (docs/etcd.md "Key layout")', () => {
  it('spells every key of the table under /veil/v1/', () => {
    expect(PREFIX).toBe('/veil/v1/');
    const table: Array<[string, string, ReturnType<typeof parseKey>]> = [
      [keys.host('h1'), 'hosts/h1', { kind: 'host', hostId: 'h1' }],
      [keys.network('n1'), 'networks/n1', { kind: 'network', networkId: 'n1' }],
      [keys.name('blue'), 'names/blue', { kind: 'name', name: 'blue' }],
      [keys.vni(4096), 'vnis/4096', { kind: 'vni', vni: 4096 }],
      [keys.endpoint('n1', 'e1'), 'endpoints/n1/e1', { kind: 'endpoint', networkId: 'n1', endpointId: 'e1' }],
      [keys.ipam('n1', '10.0.0.2'), 'ipam/n1/10.0.0.2', { kind: 'ipam', networkId: 'n1', ip: '10.0.0.2' }],
      [keys.keyEpoch('n1', 7), 'keys/n1/7', { kind: 'keyEpoch', networkId: 'n1', epoch: 7 }],
      [keys.copy('n1', 7, 'h1'), '~/copies/n1/7/h1', { kind: 'copy', networkId: 'n1', epoch: 7, hostId: 'h1' }],
      [keys.ack('n1', 7, 'h1'), '~/acks/n1/7/h1', { kind: 'ack', networkId: 'n1', epoch: 7, hostId: 'h1' }],
      [keys.rotate('n1'), 'rotate/n1', { kind: 'rotate', networkId: 'n1' }],
      [
        keys.electionPrefix() + '694d7c',
        'election/keyschedule/694d7c',
        { kind: 'election', name: 'keyschedule', candidate: '694d7c' },
      ],
      [keys.hostIndex(3), 'hostindex/3', { kind: 'hostIndex', index: 3 }],
      [keys.netIndex(0), 'netindex/0', { kind: 'netIndex', index: 0 }],
    ];
    for (const [key, spelled, parsed] of table) {
      expect(key).toBe(spelled);
      expect(parseKey(key)).toEqual(parsed);
    }
    expect(keys.endpointsPrefix('n1')).toBe('endpoints/n1/');
    expect(keys.acksPrefix('n1', 7)).toBe('~/acks/n1/7/');
    expect(keys.copiesPrefix('n1')).toBe('~/copies/n1/');
    expect(parseKey('elsewhere/x')).toBeNull();
    expect(parseKey('~/copies/n1/7')).toBeNull();
    expect(parseKey('~/other/n1/7/h1')).toBeNull();
    expect(parseKey('endpoints/n1')).toBeNull();
  });

  it('the shared range holds every key but the per-member ones (copies, acks), whatever ids look like', () => {
    const shared = [
      keys.host('h1'),
      keys.network('z'.repeat(64)),
      keys.name('Zz9'),
      keys.endpoint('n1', 'e1'),
      keys.keyEpoch('n1', 7),
      keys.rotate('n1'),
      keys.electionPrefix() + '694d7c',
      keys.hostIndex(16_383),
      keys.netIndex(0),
    ];
    for (const k of shared) expect(inKeyRange(SHARED_RANGE, k), k).toBe(true);
    for (const k of [keys.copy('n1', 7, 'h1'), keys.ack('n1', 7, 'h1'), keys.copiesPrefix(), keys.acksPrefix()])
      expect(inKeyRange(SHARED_RANGE, k), k).toBe(false);
  });

  it('refuses segments that would change the key structure', () => {
    expect(() => keys.network('a/b')).toThrow(RangeError);
    expect(() => keys.name('')).toThrow(RangeError);
    expect(() => keys.endpoint('n', '../x')).toThrow(RangeError);
    expect(() => keys.keyEpoch('n', -1)).toThrow(RangeError);
  });

  it('ranges match the SPI fields and Docker', () => {
    expect([VNI_ALLOCATION_MIN, VNI_MAX, HOST_INDEX_MAX, NETWORK_INDEX_MAX]).toEqual([
      4096, 16_777_215, 16_383, 65_535,
    ]);
  });

  it("prefixEnd is etcd's range end for a prefix", () => {
    expect(prefixEnd(Buffer.from('/veil/v1/endpoints/n1/')).toString()).toBe('/veil/v1/endpoints/n10');
    expect([...prefixEnd(Buffer.from([0x61, 0xff]))]).toEqual([0x62]);
    expect([...prefixEnd(Buffer.from([0xff]))]).toEqual([0]);
  });
});

describe('IPAM arithmetic', () => {
  it('never hands out the network, broadcast or gateway address', () => {
    const r = allocRange({ subnet: '10.0.0.0/29', gateway: '10.0.0.1' });
    const ok = [];
    for (let i = 0; i < 8; i++) if (isAllocatable(r, parseIpv4(`10.0.0.${i}`)!)) ok.push(i);
    expect(ok).toEqual([2, 3, 4, 5, 6]);
    expect(pickFreeIp(r, new Set(['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6']), 3)).toBeNull();
    expect(pickFreeIp(r, new Set(['10.0.0.2']), 0)).toBe('10.0.0.3');
    expect(pickFree(0, 3, new Set([0, 1, 3]), 5)).toBe(2);
    expect(pickFree(0, 1, new Set([0, 1]), 0)).toBeNull();
    expect(macFromIpv4('10.0.0.2')).toBe('02:42:0a:00:00:02');
  });
});
