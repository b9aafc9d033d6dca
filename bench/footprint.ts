// bench/footprint: what each thing a gateway serves costs, measured: three gateways on etcd in the
// namespace bed, then step by step plain networks, encrypted networks (one epoch each), a second
// epoch on each (the first kept by a long --key-grace), and containers. Each step prints what it added
// per item, averaged over the three gateways: memory (RSS, JS heap, external), the native tables, the
// kernel objects veil programs (links, FDB entries, nft rules), and etcd's keys and bytes. Root.
// docs/operations.md "Footprint" quotes a dated run.
//   VEIL_FOOTPRINT_ITEMS (40): networks per kind; containers are 3 × items / 2
import { writeFileSync } from 'node:fs';
import { createClusterBed, etcdGetPrefix, type ClusterBed } from '../test/system/netns/cluster-bed.js';
import { sample, SOAK_HOSTS } from '../test/system/netns/soak.js';
import { waitFor } from '../test/support/wait.js';

const ITEMS = Number(process.env.VEIL_FOOTPRINT_ITEMS ?? 40);
const CONTAINERS_PER_HOST = Math.max(1, Math.round(ITEMS / 2));

/** Per gateway figures averaged over the three, and etcd's. */
async function measure(cb: ClusterBed): Promise<Record<string, number>> {
  // A quiet moment: the last step's watch events applied, its timers run.
  await new Promise((r) => setTimeout(r, 3_000));
  const s = await sample(cb);
  const f: Record<string, number> = {};
  const avg = (name: string) => SOAK_HOSTS.reduce((a, h) => a + s[`h${h}.${name}`]!, 0) / SOAK_HOSTS.length;
  f['RSS KiB'] = avg('rssMiB') * 1024;
  f['heap KiB'] = avg('heapMiB') * 1024;
  f['SA table'] = avg('pairs') + avg('inboundSas') + avg('outboundSas') + avg('retiredSas');
  f['links'] = avg('links');
  f['FDB entries'] = avg('fdb');
  f['nft rules'] = avg('nftRules');
  const { kvs } = await etcdGetPrefix(cb, '/veil/');
  f['etcd keys'] = kvs.length;
  f['etcd bytes'] = kvs.reduce((a, kv) => a + Buffer.byteLength(kv.key) + kv.value.length, 0);
  return f;
}

async function onEveryHost(cb: ClusterBed, check: (h: number) => Promise<boolean>, what: string): Promise<void> {
  await waitFor(
    async () => (await Promise.all(SOAK_HOSTS.map((h) => check(h).catch(() => false)))).every(Boolean),
    120_000,
    what,
  );
}

const cb = await createClusterBed({ hosts: 3, etcdMembers: 1, gatewayArgs: ['--key-grace', '600s'] });
const rows: Array<{ step: string; per: number; delta: Record<string, number> }> = [];
try {
  let before = await measure(cb);
  const step = async (name: string, per: number) => {
    const after = await measure(cb);
    const delta = Object.fromEntries(Object.keys(after).map((k) => [k, (after[k]! - before[k]!) / per]));
    rows.push({ step: name, per, delta });
    console.log(`${name}: ${JSON.stringify(delta)}`);
    before = after;
  };

  for (let i = 0; i < ITEMS; i++) {
    const r = await cb.api(SOAK_HOSTS[i % 3]!, 'POST', '/networks', {
      Name: `plain${i}`,
      IPAM: { Config: [{ Subnet: `10.60.${i}.0/24` }] },
    });
    if (r.status !== 201) throw new Error(`create plain${i}: ${JSON.stringify(r.body)}`);
  }
  await onEveryHost(
    cb,
    async (h) => (await cb.api(h, 'GET', `/networks/plain${ITEMS - 1}/status`)).status === 200,
    'the plain networks on every host',
  );
  await step('plain network', ITEMS);

  for (let i = 0; i < ITEMS; i++) {
    const r = await cb.api(SOAK_HOSTS[i % 3]!, 'POST', '/networks', {
      Name: `enc${i}`,
      Options: { encrypted: '' },
      IPAM: { Config: [{ Subnet: `10.61.${i}.0/24` }] },
    });
    if (r.status !== 201) throw new Error(`create enc${i}: ${JSON.stringify(r.body)}`);
  }
  for (let i = 0; i < ITEMS; i++)
    await onEveryHost(
      cb,
      async (h) => (await cb.api(h, 'GET', `/networks/enc${i}/status`)).body.Protected === true,
      `enc${i} protected on every host`,
    );
  await step('encrypted network (one epoch)', ITEMS);

  const sealing = async (h: number, name: string) => {
    const peers = (await cb.api(h, 'GET', `/networks/${name}/status`)).body.Peers as Array<{
      Outbound: { Epoch: number } | null;
    }>;
    return Math.min(...peers.map((p) => p.Outbound?.Epoch ?? 0));
  };
  for (let i = 0; i < ITEMS; i++) {
    const was = await sealing(1, `enc${i}`);
    const r = await cb.api(1, 'POST', `/networks/enc${i}/rotate`);
    if (r.status !== 202) throw new Error(`rotate enc${i}: ${JSON.stringify(r.body)}`);
    await onEveryHost(cb, async (h) => (await sealing(h, `enc${i}`)) > was, `enc${i} rotated on every host`);
  }
  await step('epoch kept in grace (per network)', ITEMS);

  for (const h of SOAK_HOSTS)
    for (let c = 0; c < CONTAINERS_PER_HOST; c++) {
      const ct = await cb.container(`fp${h}x${c}`);
      const r = await cb.api(h, 'POST', '/networks/plain0/connect', {
        Container: `fp${h}x${c}`,
        Sandbox: { Netns: ct.netns },
        EndpointConfig: { Aliases: [`fp${h}x${c}-alias`] },
      });
      if (r.status !== 200) throw new Error(`connect fp${h}x${c}: ${JSON.stringify(r.body)}`);
    }
  await step('container (local on one gateway, remote on two)', 3 * CONTAINERS_PER_HOST);

  const when = new Date().toISOString().slice(0, 10);
  const names = Object.keys(rows[0]!.delta);
  const lines = [
    `bench/footprint ${when}: per item, averaged over three gateways (etcd: the cluster's)`,
    `${'item'.padEnd(50)}${names.map((n) => n.padStart(12)).join('')}`,
    ...rows.map(
      (r) => `${`${r.step} (×${r.per})`.padEnd(50)}${names.map((n) => r.delta[n]!.toFixed(1).padStart(12)).join('')}`,
    ),
  ];
  console.log(`\n${lines.join('\n')}`);
  if (process.env.VEIL_FOOTPRINT_OUT) writeFileSync(process.env.VEIL_FOOTPRINT_OUT, `${lines.join('\n')}\n`);
} finally {
  await cb.destroy();
}
process.exit(0);
