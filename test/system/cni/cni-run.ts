import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../netns/overlay-bed.js';

/** The built plugin, run as a runtime runs it: CNI_* in the environment, the configuration on stdin. */
export const PLUGIN = join(repoRoot(), 'dist/src/cni/main.js');

export interface CniCall {
  command: 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | string;
  containerId?: string;
  netns?: string;
  ifName?: string;
  args?: string;
  /** Anything but a string is sent as JSON. */
  conf: unknown;
}

export interface CniAnswer {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed, when it is JSON. */
  json: any;
}

/** `argv` runs the plugin (default: the built veil-cni on this Node), e.g. behind nsenter, or another plugin. */
export function runPlugin(call: CniCall, argv: readonly string[] = [process.execPath, PLUGIN]): Promise<CniAnswer> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: call.command,
    CNI_PATH: '/usr/lib/cni',
  };
  if (call.containerId !== undefined) env.CNI_CONTAINERID = call.containerId;
  if (call.netns !== undefined) env.CNI_NETNS = call.netns;
  if (call.ifName !== undefined) env.CNI_IFNAME = call.ifName;
  if (call.args !== undefined) env.CNI_ARGS = call.args;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      let json: unknown;
      try {
        json = stdout.trim() === '' ? undefined : JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolvePromise({ code: code ?? -1, stdout, stderr, json });
    });
    child.stdin.end(typeof call.conf === 'string' ? call.conf : JSON.stringify(call.conf));
  });
}
