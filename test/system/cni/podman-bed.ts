import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecResult } from '../netns/bed.js';
import { createClusterBed, type ClusterBed } from '../netns/cluster-bed.js';
import { CLI } from '../netns/overlay-bed.js';

/*
 * Hosts where podman (Debian's 4.3, CNI backend) runs containers beside each veil gateway, on one
 * etcd (docs/testing.md "The podman bed"). Everything podman keeps is in the bed's directory: its
 * containers.conf (CONTAINERS_CONF), storage (--root, --runroot, vfs), the CNI configuration
 * directory, where `veil cni config --write` puts the network's list, and the plugin directory where
 * `veil cni install` put veil-cni. podman joins only its host's network namespace (nsenter --net). The image is a
 * busybox-static root filesystem made here and `podman import`ed: no registry.
 */

export const IMAGE = 'veil-test/busybox:1';
const APPLETS = ['sh', 'ping', 'ip', 'cat', 'sleep', 'nslookup', 'hostname', 'true'];

export interface PodmanBed {
  cb: ClusterBed;
  /** podman on host i, in the host's network namespace. */
  podman(hostIndex: number, args: string[], opts?: { allowFail?: boolean; timeoutMs?: number }): Promise<ExecResult>;
  /** Writes the CNI list of a veil network into host i's CNI configuration directory with `veil cni config`. */
  configure(hostIndex: number, network: string): Promise<void>;
  destroy(): Promise<void>;
}

export async function createPodmanBed(options: { hosts: number; podmanHosts: number[] }): Promise<PodmanBed> {
  const dir = mkdtempSync(join(tmpdir(), 'veil-podman-'));
  const bin = join(dir, 'cni-bin');
  mkdirSync(bin);
  // As a user installs it on a host (docs/cni.md "Installing"): the launcher and this Node beside it.
  execFileSync(process.execPath, [CLI, 'cni', 'install', bin]);
  const d = (i: number) => join(dir, `p${i}`);
  for (const i of options.podmanHosts) {
    for (const sub of ['root', 'runroot', 'net.d', 'tmp']) mkdirSync(join(d(i), sub), { recursive: true });
    writeFileSync(
      join(d(i), 'containers.conf'),
      [
        '[containers]',
        // The default open-files limit is above these machines' hard limit: runc would refuse it.
        'default_ulimits = []',
        '[network]',
        'network_backend = "cni"',
        `cni_plugin_dirs = ["${bin}", "/usr/lib/cni"]`,
        `network_config_dir = "${join(d(i), 'net.d')}"`,
        '[engine]',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `events_logfile_path = "${join(d(i), 'events.log')}"`,
        '',
      ].join('\n'),
    );
  }
  let cb: ClusterBed | undefined;
  const podman = (i: number, args: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}) =>
    new Promise<ExecResult>((resolvePromise, reject) => {
      const argv = [
        `--net=/run/netns/${cb!.bed.hosts[i - 1]!.netns}`,
        'podman',
        '--root',
        join(d(i), 'root'),
        '--runroot',
        join(d(i), 'runroot'),
        '--tmpdir',
        join(d(i), 'tmp'),
        '--storage-driver',
        'vfs',
        ...args,
      ];
      execFile(
        'nsenter',
        argv,
        {
          encoding: 'utf8',
          timeout: opts.timeoutMs ?? 60_000,
          env: { ...process.env, CONTAINERS_CONF: join(d(i), 'containers.conf') },
        },
        (err, stdout, stderr) => {
          const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
          if (code !== 0 && !opts.allowFail)
            reject(new Error(`podman ${args.join(' ')} (host ${i}) failed (${code}): ${stderr}${stdout}`));
          else resolvePromise({ stdout, stderr, code });
        },
      );
    });
  const destroy = async () => {
    if (cb)
      for (const i of options.podmanHosts) {
        await podman(i, ['rm', '-fa', '-t', '0'], { allowFail: true });
        await podman(i, ['system', 'reset', '-f'], { allowFail: true, timeoutMs: 30_000 });
      }
    await cb?.destroy();
    for (const i of options.podmanHosts)
      execFileSync('sh', ['-c', `grep -o ' ${d(i)}[^ ]*' /proc/mounts | xargs -r -n1 umount -l`], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    cb = await createClusterBed({ hosts: options.hosts });
    const root = join(dir, 'rootfs');
    mkdirSync(join(root, 'bin'), { recursive: true });
    for (const sub of ['etc', 'proc', 'sys', 'dev', 'tmp']) mkdirSync(join(root, sub));
    copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
    chmodSync(join(root, 'bin', 'busybox'), 0o755);
    for (const a of APPLETS) symlinkSync('busybox', join(root, 'bin', a));
    const tar = join(dir, 'rootfs.tar');
    execFileSync('tar', ['-C', root, '-cf', tar, '.']);
    for (const i of options.podmanHosts) await podman(i, ['import', tar, IMAGE]);
    return {
      cb,
      podman,
      async configure(i, network) {
        // As a user would: the CLI pointed at this host's gateway writes the list for its runtime.
        execFileSync(
          process.execPath,
          [CLI, '--api', `unix:${cb!.socket(i)}`, 'cni', 'config', network, '--write', join(d(i), 'net.d')],
          { encoding: 'utf8' },
        );
      },
      destroy,
    };
  } catch (err) {
    await destroy();
    throw err;
  }
}
