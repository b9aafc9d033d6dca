import { defineConfig } from 'vitest/config';

// Two tiers (docs/testing.md "Tiers"). unit: no root, no etcd, no child process; files run in
// parallel. system: namespaces, etcd, the appliance; they share the machine's network stack,
// so files run one at a time, after the unit tier.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          maxWorkers: '100%',
          include: ['test/**/*.test.ts'],
          exclude: ['test/system/**', '**/node_modules/**'],
          testTimeout: 30_000,
          hookTimeout: 30_000,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'system',
          include: ['test/system/**/*.test.ts'],
          setupFiles: ['test/system/setup.ts'],
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 120_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
