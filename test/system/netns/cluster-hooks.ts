import { afterAll, afterEach } from 'vitest';
import type { ClusterBed } from './cluster-bed.js';

/**
 * The hooks of a file that shares one cluster bed: after each test, a gateway that test stopped and
 * did not start again (it failed first) starts again, so the next test gets a whole cluster; after
 * the file, the cluster goes.
 */
export function cleanUpClusterBed(current: () => ClusterBed | undefined): void {
  afterEach(async () => {
    await current()?.ensureGateways();
  }, 60_000);
  afterAll(async () => {
    await current()?.destroy();
  }, 60_000);
}
