import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { BedProcess, ExecResult } from '../netns/bed.js';
import { createClusterBed, type ClusterBed } from '../netns/cluster-bed.js';

/*
 * Hosts with a real dockerd each (Debian's docker.io) beside their veil gateway, on one etcd
 * (docs/testing.md "The Docker bed"). Each dockerd joins only its host's network namespace (nsenter;
 * ip netns exec would remount /sys and hide the cgroups) and runs in a private mount namespace where
 * /run/docker/plugins is the host's own plugins directory, so each Docker finds its own gateway's
 * plugin. Its containers' namespace files (<exec root>/netns) live on a shared mount made before the
 * gateways start, so they are seen by the gateways as Docker's on one host are (docs/docker.md
 * "Enabling the plugin"). Its image is a busybox-static root filesystem made here and `docker import`ed: no registry.
 */

/** Debian's docker.io client, not whatever newer one is first on PATH. */
export const DOCKER = '/usr/bin/docker';
export const IMAGE = 'veil-test/busybox:1';
const APPLETS = ['sh', 'ping', 'ip', 'cat', 'sleep', 'nslookup', 'wget', 'true', 'hostname', 'ifconfig', 'nc'];

export interface DockerBed {
  cb: ClusterBed;
  /** Runs the docker CLI against host i's dockerd (from the test process: the CLI only talks to the socket). */
  docker(hostIndex: number, args: string[], opts?: { allowFail?: boolean; timeoutMs?: number }): Promise<ExecResult>;
  /**
   * `docker network create -d veil --ipam-driver veil -o encrypted --subnet S [extra] NAME` on host i
   * (docs/docker.md "Networks"); never throws, the answer says.
   */
  createNetwork(hostIndex: number, name: string, subnet: string, extra?: string[]): Promise<ExecResult>;
  /** Host i's dockerd API socket. */
  dockerSocket(hostIndex: number): string;
  /** Host i's plugins directory (its gateway's --docker-plugins). */
  pluginsDir(hostIndex: number): string;
  /** Stops host i's dockerd (SIGTERM: it stops its containers) and starts it again. */
  restartDockerd(hostIndex: number): Promise<void>;
  destroy(): Promise<void>;
}

/** Copies a file into the root filesystem at the same path. */
function copyIn(root: string, path: string): void {
  mkdirSync(join(root, dirname(path)), { recursive: true });
  copyFileSync(path, join(root, path));
  chmodSync(join(root, path), 0o755);
}

function makeRootfs(dir: string, programs: readonly string[]): string {
  const root = join(dir, 'rootfs');
  mkdirSync(join(root, 'bin'), { recursive: true });
  for (const d of ['etc', 'proc', 'sys', 'dev', 'tmp']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
  chmodSync(join(root, 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) symlinkSync('busybox', join(root, 'bin', a));
  // Dynamically linked programs (bench/docker's iperf3) with the libraries ldd names.
  for (const program of programs) {
    copyIn(root, program);
    const libs = execFileSync('ldd', [program], { encoding: 'utf8' }).match(/\/\S+/g) ?? [];
    for (const lib of libs) copyIn(root, lib);
  }
  const tar = join(dir, 'rootfs.tar');
  execFileSync('tar', ['-C', root, '-cf', tar, '.']);
  return tar;
}

export async function createDockerBed(options: {
  hosts: number;
  gatewayArgs?: string[];
  /** Extra flags for one host's gateway besides the Docker ones, e.g. {2: ['--os', 'windows']}. */
  hostArgs?: Record<number, string[]>;
  /** Dynamically linked programs to put in the image besides busybox, e.g. /usr/bin/iperf3. */
  programs?: readonly string[];
}): Promise<DockerBed> {
  const dir = mkdtempSync(join(tmpdir(), 'veil-docker-'));
  const socket = (i: number) => join(dir, `d${i}`, 'docker.sock');
  const plugins = (i: number) => join(dir, `d${i}`, 'plugins');
  const dockerds = new Map<number, BedProcess>();
  const hostArgs: Record<number, string[]> = {};
  const netnsDirs: string[] = [];
  for (let i = 1; i <= options.hosts; i++) {
    mkdirSync(plugins(i), { recursive: true });
    const netnsDir = join(dir, `d${i}`, 'exec', 'netns');
    mkdirSync(netnsDir, { recursive: true });
    execFileSync('mount', ['--bind', netnsDir, netnsDir]);
    netnsDirs.push(netnsDir);
    execFileSync('mount', ['--make-shared', netnsDir]);
    hostArgs[i] = [
      '--docker-plugins',
      plugins(i),
      '--docker-host',
      `unix://${socket(i)}`,
      ...(options.hostArgs?.[i] ?? []),
    ];
  }
  let cb: ClusterBed | undefined;
  const run = (i: number, args: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}) =>
    new Promise<ExecResult>((resolve, reject) => {
      execFile(
        DOCKER,
        ['-H', `unix://${socket(i)}`, ...args],
        { encoding: 'utf8', timeout: opts.timeoutMs ?? 60_000 },
        (err, stdout, stderr) => {
          const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
          const result = { stdout, stderr, code };
          if (code !== 0 && !opts.allowFail)
            reject(new Error(`docker ${args.join(' ')} (host ${i}) failed (${code}): ${stderr}${stdout}`));
          else resolve(result);
        },
      );
    });
  const destroy = async () => {
    for (const [i, d] of dockerds) {
      // Containers first: their processes live outside the host's namespace, so only Docker can stop them.
      const ids = (await run(i, ['ps', '-aq'], { allowFail: true })).stdout.split(/\s+/).filter(Boolean);
      if (ids.length > 0) await run(i, ['rm', '-f', ...ids], { allowFail: true });
      await d.stop(15_000);
    }
    await cb?.destroy();
    // Namespace files Docker left (a killed dockerd), then the shared mounts themselves.
    for (const d of netnsDirs) execFileSync('umount', ['--recursive', '--lazy', d], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  };
  const startDockerd = (i: number) => {
    const host = cb!.bed.hosts[i - 1]!;
    const d = join(dir, `d${i}`);
    const dockerd = [
      'dockerd',
      '--data-root',
      join(d, 'data'),
      '--exec-root',
      join(d, 'exec'),
      '--pidfile',
      join(d, 'docker.pid'),
      '-H',
      `unix://${socket(i)}`,
      '--iptables=false',
      '--ip6tables=false',
      '--ip-masq=false',
      '--bridge=none',
      '--storage-driver=vfs',
      // Names Docker's embedded DNS does not know go to veil's resolver (docs/docker.md "Names across hosts").
      '--dns',
      '169.254.53.53',
    ].join(' ');
    const proc = cb!.bed.spawn(
      host.netns,
      [
        // unchanged: the netns directory stays a peer of the host's; / is private, so the plugins bind is not.
        'unshare',
        '-m',
        '--propagation',
        'unchanged',
        'sh',
        '-c',
        `mkdir -p /run/docker/plugins && mount --bind ${plugins(i)} /run/docker/plugins && exec ${dockerd}`,
      ],
      { lifetime: 'bed', enter: 'nsenter' },
    );
    dockerds.set(i, proc);
  };
  const waitDockerd = async (i: number) => {
    const deadline = Date.now() + 30_000;
    while ((await run(i, ['version'], { allowFail: true })).code !== 0) {
      if (Date.now() > deadline)
        throw new Error(`dockerd of host ${i} did not come up: ${dockerds.get(i)!.stderr().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  try {
    cb = await createClusterBed({ hosts: options.hosts, gatewayArgs: options.gatewayArgs ?? [], hostArgs });
    const tar = makeRootfs(dir, options.programs ?? []);
    for (let i = 1; i <= options.hosts; i++) startDockerd(i);
    for (let i = 1; i <= options.hosts; i++) {
      await waitDockerd(i);
      execFileSync(DOCKER, ['-H', `unix://${socket(i)}`, 'import', tar, IMAGE], { stdio: 'ignore' });
    }
    return {
      cb,
      docker: run,
      createNetwork: (i, name, subnet, extra = []) =>
        run(
          i,
          [
            'network',
            'create',
            '-d',
            'veil',
            '--ipam-driver',
            'veil',
            '-o',
            'encrypted',
            '--subnet',
            subnet,
            ...extra,
            name,
          ],
          { allowFail: true },
        ),
      dockerSocket: socket,
      pluginsDir: plugins,
      async restartDockerd(i) {
        await dockerds.get(i)?.stop(30_000);
        startDockerd(i);
        await waitDockerd(i);
      },
      destroy,
    };
  } catch (err) {
    await destroy();
    throw err;
  }
}
