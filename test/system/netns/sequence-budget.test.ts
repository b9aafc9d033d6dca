// Rotation on a packet budget: with a tiny budget per outbound SA, a ping flood makes the
// gateways ask for rotations; epochs advance, nothing is lost, no SA runs out (seq-exhausted)
// and no sequence number is reused under one key (each epoch's SA has its own key and starts at 1).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../support/wait.js';
import { createClusterBed, type ClusterBed } from './cluster-bed.js';

const BUDGET = 4000;
let cb: ClusterBed;

beforeAll(async () => {
  cb = await createClusterBed({ hosts: 2, gatewayArgs: ['--sequence-budget', String(BUDGET)] });
}, 120_000);
afterAll(async () => {
  await cb?.destroy();
}, 60_000);

describe('sequence budget', () => {
  it('a flood past a tiny budget rotates the keys with no loss and no exhausted SA', async () => {
    expect(
      (
        await cb.api(1, 'POST', '/networks', {
          Name: 'budget',
          Options: { encrypted: '' },
          IPAM: { Config: [{ Subnet: '10.63.0.0/24' }] },
        })
      ).status,
    ).toBe(201);
    const c1 = await cb.container('bud1');
    const c2 = await cb.container('bud2');
    await cb.api(1, 'POST', '/networks/budget/connect', { Container: 'a', Sandbox: { Netns: c1.netns } });
    const b = (await cb.api(2, 'POST', '/networks/budget/connect', { Container: 'b', Sandbox: { Netns: c2.netns } }))
      .body;
    const ipB = b.IPv4Address.split('/')[0];
    await waitFor(
      async () => (await cb.bed.exec(c1.ns, ['ping', '-c', '1', '-W', '1', ipB], { allowFail: true })).code === 0,
      20_000,
      'first ping',
    );
    const epochOf = async () =>
      (
        (await cb.api(1, 'GET', '/networks/budget/keys')).body.Epochs as Array<{ Epoch: number; OutboundHere: boolean }>
      ).find((e) => e.OutboundHere)?.Epoch ?? 0;
    const before = await epochOf();

    // 5000 echo requests at 500/s: 10,000 datagrams sealed by each side, 2.5 budgets' worth.
    const flood = await cb.bed.exec(c1.ns, ['ping', '-q', '-c', '5000', '-i', '0.002', '-W', '2', ipB], {
      allowFail: true,
      timeoutMs: 60_000,
    });
    const after = await epochOf();
    const loss = /(\d+) packets transmitted, (\d+) received/.exec(flood.stdout);
    const status = await Promise.all([1, 2].map(async (i) => (await cb.api(i, 'GET', '/status')).body));
    const drops = status
      .flatMap((s) => s.pairs.map((p: { drops: Record<string, number> }) => p.drops))
      .concat(status.map((s) => s.unattributedDrops));
    const sum = (reason: string) => drops.reduce((n, d) => n + (d[reason] ?? 0), 0);
    console.log(
      `sequence budget ${BUDGET}: epochs ${before} → ${after}; ping ${loss?.[1]} sent, ${loss?.[2]} received; drops seq-exhausted=${sum('seq-exhausted')} auth-failed=${sum('auth-failed')} unknown-spi=${sum('unknown-spi')} no-outbound-sa=${sum('no-outbound-sa')}`,
    );
    expect(after - before, 'rotations asked for by the budget').toBeGreaterThanOrEqual(2);
    expect(loss?.[2]).toBe(loss?.[1]);
    expect(sum('seq-exhausted')).toBe(0);
    expect(sum('auth-failed')).toBe(0);
    expect(sum('unknown-spi')).toBe(0);
    // Every outbound SA in use stays within its budget: sealed counts restart with each epoch's new key.
    for (const s of status) for (const p of s.pairs) if (p.outbound) expect(p.outbound.sealed).toBeLessThan(BUDGET);
  }, 120_000);
});
