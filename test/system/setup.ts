// The system tier's setup (vitest.config.ts): whatever a test spawned in a namespace bed ends with
// that test, passed or failed, so a failure never leaks a ping flood, a capture or a gateway into the
// next test (docs/testing.md "The namespace bed").
import { afterEach } from 'vitest';
import { stopTestProcesses } from './netns/bed.js';

afterEach(async () => {
  await stopTestProcesses();
}, 30_000);
