// The in-memory wire and VTEP that the in-process cluster runs gateways on: what UDP would do
// (delivery to whoever is bound, nothing to a closed port, a copy per receiver), and the faults a
// test asks for.
import { describe, expect, it } from 'vitest';
import { MemoryVtep, MemoryWire } from '../../../src/vxlan/ts/io-memory.js';
import { ESP_IN_UDP_PORT, VTEP_DELIVERY_PORT, VXLAN_PORT } from '../../../src/vxlan/wire/constants.js';

const bytes = (...b: number[]) => Uint8Array.from(b);
const settle = () => new Promise((r) => setImmediate(r));

function host(wire: MemoryWire, address: string) {
  const esp: Array<[number[], string, number]> = [];
  const plain: Array<[number[], string, number]> = [];
  const io = wire.underlay(address);
  const open = () =>
    io.open(
      (d, a, p) => esp.push([[...d], a, p]),
      (d, a, p) => plain.push([[...d], a, p]),
    );
  return { io, esp, plain, open };
}

describe('MemoryWire', () => {
  it('delivers to whoever is bound at address:port, from 4500 (ESP) or 4789 (VXLAN), on a later turn', async () => {
    const wire = new MemoryWire();
    const a = host(wire, '198.18.0.1');
    const b = host(wire, '198.18.0.2');
    await a.open();
    await b.open();
    expect(a.io.send(bytes(1, 2), '198.18.0.2', ESP_IN_UDP_PORT)).toBe(true);
    expect(a.io.send(bytes(3), '198.18.0.2', VXLAN_PORT)).toBe(true);
    expect(b.esp).toEqual([]); // not in the send() call
    await settle();
    expect(b.esp).toEqual([[[1, 2], '198.18.0.1', ESP_IN_UDP_PORT]]);
    expect(b.plain).toEqual([[[3], '198.18.0.1', VXLAN_PORT]]);
  });

  it('loses what goes to a closed or unbound port; a closed underlay cannot send; a taken address cannot be bound', async () => {
    const wire = new MemoryWire('sync');
    const a = host(wire, '198.18.0.1');
    const b = host(wire, '198.18.0.2');
    await a.open();
    a.io.send(bytes(1), '198.18.0.2', ESP_IN_UDP_PORT);
    await b.open();
    await b.io.close();
    a.io.send(bytes(2), '198.18.0.2', ESP_IN_UDP_PORT);
    expect(b.esp).toEqual([]);
    expect(wire.counts).toMatchObject({ sent: 2, delivered: 0, unreachable: 2 });
    await a.io.close();
    expect(a.io.send(bytes(3), '198.18.0.2', ESP_IN_UDP_PORT)).toBe(false);
    await host(wire, '198.18.0.3').open();
    await expect(host(wire, '198.18.0.3').open()).rejects.toThrow(/EADDRINUSE/);
  });

  it('drops, duplicates, holds and reorders on demand; taps see every datagram, injected ones marked', async () => {
    const wire = new MemoryWire('sync');
    const a = host(wire, '198.18.0.1');
    const b = host(wire, '198.18.0.2');
    await a.open();
    await b.open();
    const captured = wire.capture();
    const verdicts = ['drop', 'duplicate', 'hold', 'hold', 'deliver'] as const;
    let i = 0;
    wire.policy = () => verdicts[i++] ?? 'deliver';
    for (const n of [1, 2, 3, 4, 5]) a.io.send(bytes(n), '198.18.0.2', ESP_IN_UDP_PORT);
    expect(b.esp.map(([d]) => d[0])).toEqual([2, 2, 5]);
    expect(wire.release('reversed')).toBe(2);
    expect(b.esp.map(([d]) => d[0])).toEqual([2, 2, 5, 4, 3]);
    wire.inject({
      from: { address: '203.0.113.9', port: 4500 },
      to: { address: '198.18.0.2', port: ESP_IN_UDP_PORT },
      datagram: bytes(9),
    });
    captured.stop();
    a.io.send(bytes(6), '198.18.0.2', ESP_IN_UDP_PORT);
    expect(captured.datagrams.map((d) => [d.datagram[0], d.injected ?? false])).toEqual([
      [1, false],
      [2, false],
      [3, false],
      [4, false],
      [5, false],
      [9, true],
    ]);
    expect(b.esp.at(-2)).toEqual([[9], '203.0.113.9', 4500]);
  });

  it('says when the datagrams sent so far have all arrived or been lost, held ones only once released', async () => {
    const wire = new MemoryWire();
    const a = host(wire, '198.18.0.1');
    await a.open();
    await host(wire, '198.18.0.2').open();
    const verdicts = ['deliver', 'hold', 'drop'] as const;
    let i = 0;
    wire.policy = () => verdicts[i++] ?? 'deliver';
    for (const n of [1, 2, 3]) a.io.send(bytes(n), '198.18.0.2', ESP_IN_UDP_PORT);
    expect([wire.settled(1), wire.settled(0)]).toEqual([false, true]);
    await settle();
    expect([wire.settled(1), wire.settled(3)]).toEqual([true, false]);
    wire.release();
    expect(wire.settled(3)).toBe(false);
    await settle();
    expect(wire.settled(3)).toBe(true);
  });

  it('each receiver gets its own copy: what the sender changes afterwards does not reach it', async () => {
    const wire = new MemoryWire();
    const a = host(wire, '198.18.0.1');
    const b = host(wire, '198.18.0.2');
    await a.open();
    await b.open();
    const sent = bytes(1, 2, 3);
    a.io.send(sent, '198.18.0.2', ESP_IN_UDP_PORT);
    sent.fill(0);
    await settle();
    expect(b.esp[0]![0]).toEqual([1, 2, 3]);
  });
});

describe('MemoryVtep', () => {
  it('hands what the VTEP sends to a gateway address to that peer, and what the gateway delivers to the listeners from the delivery port', async () => {
    const vtep = new MemoryVtep('169.254.1.1', '169.254.1.2');
    await vtep.open();
    const got: Array<[string, number[], string, number]> = [];
    await vtep.addPeer('h2', '169.254.64.2', (d, a, p) => got.push(['h2', [...d], a, p]));
    await expect(vtep.addPeer('h3', '169.254.64.2', () => undefined)).rejects.toThrow(/EADDRINUSE/);
    expect(vtep.gateways()).toEqual(new Map([['h2', '169.254.64.2']]));
    expect(vtep.send('169.254.64.2', bytes(7), { port: 50_000 })).toBe(true);
    expect(vtep.send('169.254.64.3', bytes(8))).toBe(false);
    await settle();
    expect(got).toEqual([['h2', [7], '169.254.1.2', 50_000]]);

    const delivered: Array<[number[], string, number]> = [];
    vtep.listen((d, from) => delivered.push([[...d], from.address, from.port]));
    expect(vtep.deliver(bytes(5))).toBe(true);
    await settle();
    expect(delivered).toEqual([[[5], '169.254.1.1', VTEP_DELIVERY_PORT]]);

    await vtep.close();
    expect(vtep.deliver(bytes(6))).toBe(false);
    expect(vtep.send('169.254.64.2', bytes(7))).toBe(false);
  });
});
