#!/usr/bin/env node
// veil-cni: the CNI plugin binary (docs/cni.md). The runtime runs it once per call.
import { existsSync } from 'node:fs';
import { ApiClient } from '../cli/client.js';
import { execRunner } from '../host/exec.js';
import { interfaceNamed } from '../host/netns.js';
import { runCni } from './plugin.js';

/** Well inside the runtimes' own limits (kubelet, podman): an answer, never a hang. */
const API_TIMEOUT_MS = 20_000;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const outcome = await runCni(process.env, await readStdin(), {
  client: (options) => new ApiClient({ ...options, timeoutMs: API_TIMEOUT_MS }),
  netnsExists: (path) => existsSync(path),
  interfaceNamed: (netns, ifName) => interfaceNamed(execRunner, { path: netns }, ifName),
});
if (outcome.stderr) process.stderr.write(outcome.stderr);
process.stdout.write(outcome.stdout, () => process.exit(outcome.exitCode));
