// Who may register a host id (docs/etcd.md "Leases"): a gateway back from a crash replaces the record
// its own dead predecessor left, at once, because its data directory's lock proves that process gone;
// a second gateway on the same data directory is refused; one on a copy of it (a cloned machine) never
// takes the live host's record over. Real etcd, two hosts with an encrypted network, and a third
// host's namespaces for the second gateway and the clone.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { waitFor } from '../../support/wait.js';
import { cleanUpClusterBed } from './cluster-hooks.js';
import {
  createClusterBed,
  encryptedNetworkWithContainers,
  etcdGetPrefix,
  type ClusterBed,
  type ContainerOnNetwork,
} from './cluster-bed.js';

let cb: ClusterBed;
let containers: Record<number, ContainerOnNetwork>;

beforeAll(async () => {
  cb = await createClusterBed({ hosts: 3, startGateways: 2 });
  ({ containers } = await encryptedNetworkWithContainers(cb, {
    name: 'hid',
    subnet: '10.96.0.0/24',
    label: 'hid',
    hosts: [1, 2],
  }));
}, 180_000);

cleanUpClusterBed(() => cb);

/** hosts/h1 as etcd holds it: its incarnation and the revision that last wrote it. */
async function h1Record(): Promise<{ incarnation: string; modRevision: number }> {
  const { kvs } = await etcdGetPrefix(cb, '/veil/v1/hosts/h1');
  const kv = kvs.find((k) => k.key === '/veil/v1/hosts/h1');
  if (!kv) throw new Error('no hosts/h1 in etcd');
  return {
    incarnation: (JSON.parse(kv.value.toString()) as { incarnation: string }).incarnation,
    modRevision: kv.modRevision,
  };
}

async function bothWays(): Promise<void> {
  const ping = async (from: number, to: number) =>
    (
      await cb.bed.exec(containers[from]!.ns, ['ping', '-n', '-q', '-c', '1', '-W', '2', containers[to]!.ip], {
        allowFail: true,
      })
    ).code === 0;
  await waitFor(() => ping(1, 2), 30_000, 'h1 reaches h2');
  await waitFor(() => ping(2, 1), 30_000, 'h2 reaches h1');
}

it('killed (SIGKILL), a gateway replaces its own dead record at once instead of waiting out its lease', async () => {
  const before = await h1Record();
  await cb.stopGateway(1, 'SIGKILL');
  const gw = await cb.startGateway(1);
  const log = gw.stdout();
  expect(log).toMatch(/this data directory's previous gateway is gone/);
  const replaced = log.split('\n').find((l) => l.includes('its record replaced'));
  expect(replaced, 'the record it replaced is the one its predecessor left').toContain(
    `"previous":"${before.incarnation}"`,
  );
  expect(log).not.toMatch(/waiting for it to expire/);
  const after = await h1Record();
  expect(after.incarnation).not.toBe(before.incarnation);
  await bothWays();
}, 90_000);

it('a second gateway on the same data directory is refused before it touches anything', async () => {
  const before = await h1Record();
  const second = cb.startGateway(3, ['--host-id', 'h1', '--data-dir', join(cb.dir, 'h1')], { transient: true });
  await expect(second).rejects.toThrow(/VEIL_ERR_DATA_DIR_IN_USE/);
  expect(await h1Record()).toEqual(before);
  await bothWays();
}, 60_000);

it('a gateway on a copy of the data directory (a cloned machine) waits for the live host and never takes its record', async () => {
  const before = await h1Record();
  const copy = join(cb.dir, 'h1-clone');
  execFileSync('cp', ['-a', join(cb.dir, 'h1'), copy]); // identity, lock file and incarnation mark alike
  const clone = cb.startGateway(3, ['--host-id', 'h1', '--data-dir', copy], { transient: true });
  // It waits one TTL (4 s here) and a little for the record to go, and gives up: the host is alive.
  const err = (await clone.catch((e: unknown) => e)) as Error;
  expect(err.message).toMatch(/the data directory is a copy/);
  expect(err.message).toMatch(/waiting for it to expire/);
  expect(err.message).toMatch(/VEIL_ERR_HOST_ID_IN_USE/);
  expect(err.message).not.toMatch(/its record replaced/);
  expect(await h1Record()).toEqual(before);
  await bothWays();
}, 60_000);
