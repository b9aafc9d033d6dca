// `veil gateway` flags of the appliance: --cluster-store optional (embedded etcd), --cluster-store-opt
// (etcd client TLS, Docker's kv.* names), each from the command line or its environment variable.
import { describe, expect, it } from 'vitest';
import { DEFAULTS, parseClusterStoreOpts, parseGatewayConfig } from '../../src/config/cluster.js';
import { VeilError } from '../../src/errors.js';

const parse = (argv: string[], env: Record<string, string> = {}) => parseGatewayConfig(argv, env, 'node-7');
const BASE = ['--cluster-advertise', '198.18.0.1'];

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(VeilError);
    expect((err as VeilError).code).toBe('VEIL_ERR_CONFIG_INVALID');
    return (err as Error).message;
  }
  throw new Error('expected a refusal');
}

describe('--cluster-store', () => {
  it('is optional: without it the gateway embeds etcd (no endpoints in the config)', () => {
    const c = parse(BASE);
    expect(c.clusterStore).toBeUndefined();
    expect(c.clusterStoreTls).toBeUndefined();
    expect(c.dataDir).toBe(DEFAULTS.dataDir);
    expect(c.hostId).toBe('node-7');
  });

  it('takes several endpoints, from the flag or the environment (the flag wins)', () => {
    expect(parse([...BASE, '--cluster-store', 'etcd://10.0.0.5:2379,10.0.0.6:2379']).clusterStore).toEqual([
      'http://10.0.0.5:2379',
      'http://10.0.0.6:2379',
    ]);
    expect(parse(BASE, { VEIL_CLUSTER_STORE: 'etcd://e1:2379' }).clusterStore).toEqual(['http://e1:2379']);
    expect(
      parse([...BASE, '--cluster-store=etcd://e2:2379'], { VEIL_CLUSTER_STORE: 'etcd://e1:2379' }).clusterStore,
    ).toEqual(['http://e2:2379']);
  });

  it('refuses what is not etcd://HOST:PORT', () => {
    expect(refusal(() => parse([...BASE, '--cluster-store', 'consul://c:8500']))).toMatch(/etcd:\/\/HOST:PORT/);
    expect(refusal(() => parse([...BASE, '--cluster-store', 'etcd://e1']))).toMatch(/HOST:PORT/);
  });
});

describe('--cluster-store-opt', () => {
  it("maps Docker's kv.cacertfile, kv.certfile and kv.keyfile to TLS files and makes the endpoints https", () => {
    const c = parse([
      ...BASE,
      '--cluster-store',
      'etcd://e1:2379',
      '--cluster-store-opt',
      'kv.cacertfile=/etc/veil/etcd-ca.pem',
      '--cluster-store-opt',
      'kv.certfile=/etc/veil/client.pem',
      '--cluster-store-opt=kv.keyfile=/etc/veil/client-key.pem',
    ]);
    expect(c.clusterStore).toEqual(['https://e1:2379']);
    expect(c.clusterStoreTls).toEqual({
      ca: '/etc/veil/etcd-ca.pem',
      cert: '/etc/veil/client.pem',
      key: '/etc/veil/client-key.pem',
    });
  });

  it('reads a comma-separated list from VEIL_CLUSTER_STORE_OPT; flags given replace it', () => {
    const env = {
      VEIL_CLUSTER_STORE: 'etcd://e1:2379',
      VEIL_CLUSTER_STORE_OPT: 'kv.cacertfile=/a/ca.pem,kv.certfile=/a/c.pem,kv.keyfile=/a/k.pem',
    };
    expect(parse(BASE, env).clusterStoreTls).toEqual({ ca: '/a/ca.pem', cert: '/a/c.pem', key: '/a/k.pem' });
    expect(parse([...BASE, '--cluster-store-opt', 'kv.cacertfile=/b/ca.pem'], env).clusterStoreTls).toEqual({
      ca: '/b/ca.pem',
    });
  });

  it('refuses unknown options, a certificate without its key, a missing file name, and TLS for the embedded store', () => {
    const store = ['--cluster-store', 'etcd://e1:2379'];
    expect(refusal(() => parse([...BASE, ...store, '--cluster-store-opt', 'discovery.ttl=20']))).toMatch(
      /known options are kv\.cacertfile, kv\.certfile, kv\.keyfile/,
    );
    expect(refusal(() => parse([...BASE, ...store, '--cluster-store-opt', 'kv.certfile=/c.pem']))).toMatch(
      /go together/,
    );
    expect(refusal(() => parse([...BASE, ...store, '--cluster-store-opt', 'kv.cacertfile']))).toMatch(/needs a file/);
    expect(refusal(() => parse([...BASE, ...store, '--cluster-store-opt', 'kv.cacertfile=']))).toMatch(/needs a file/);
    expect(refusal(() => parse([...BASE, '--cluster-store-opt', 'kv.cacertfile=/ca.pem']))).toMatch(/embedded etcd/);
  });

  it('a CA alone is server-verified TLS without a client certificate', () => {
    expect(parseClusterStoreOpts(['kv.cacertfile=/ca.pem'])).toEqual({ ca: '/ca.pem' });
    expect(parseClusterStoreOpts(['kv.certfile=/c.pem', 'kv.keyfile=/k.pem'])).toEqual({
      cert: '/c.pem',
      key: '/k.pem',
    });
  });
});

describe('the other appliance flags keep their defaults and ranges', () => {
  it('--data-dir, --mtu, --api-socket', () => {
    const c = parse([...BASE, '--data-dir', '/srv/veil', '--mtu', '9000'], { VEIL_API_SOCKET: '/run/x.sock' });
    expect(c).toMatchObject({ dataDir: '/srv/veil', underlayMtu: 9000, apiSocket: '/run/x.sock' });
    expect(parse(BASE).underlayMtu, 'absent: read from the interface at start').toBeUndefined();
    expect(refusal(() => parse([...BASE, '--mtu', '576']))).toMatch(/--mtu must be an integer in 1280\.\.9000/);
  });

  it('--plain-path: kernel by default, gateway when asked, nothing else', () => {
    expect(parse(BASE).plainPath).toBe('kernel');
    expect(parse([...BASE, '--plain-path', 'gateway']).plainPath).toBe('gateway');
    expect(parse(BASE, { VEIL_PLAIN_PATH: 'gateway' }).plainPath).toBe('gateway');
    expect(refusal(() => parse([...BASE, '--plain-path', 'user']))).toMatch(/--plain-path must be kernel or gateway/);
  });

  it('--cluster-advertise is still required, and unknown flags are refused', () => {
    expect(refusal(() => parse([]))).toMatch(/--cluster-advertise is required/);
    expect(refusal(() => parse([...BASE, '--cluster-store-opts', 'kv.cacertfile=/ca.pem']))).toMatch(
      /unknown flag --cluster-store-opts/,
    );
  });
});

describe('--docker-plugins and --docker-host', () => {
  it('the plugin is off unless asked; its socket directory and Docker’s API socket from flags or the environment', () => {
    expect(parse(BASE).docker).toBeUndefined();
    expect(parse([...BASE, '--docker-plugins', '/run/docker/plugins']).docker).toEqual({
      pluginsDir: '/run/docker/plugins',
      engineSocket: '/var/run/docker.sock',
    });
    expect(
      parse(BASE, { VEIL_DOCKER_PLUGINS: '/srv/plugins', VEIL_DOCKER_HOST: 'unix:///srv/docker.sock' }).docker,
    ).toEqual({ pluginsDir: '/srv/plugins', engineSocket: '/srv/docker.sock' });
  });

  it('refuses a Docker host that is not a unix socket, and one given without the plugin', () => {
    expect(refusal(() => parse([...BASE, '--docker-plugins', '/p', '--docker-host', 'tcp://127.0.0.1:2375']))).toMatch(
      /--docker-host must be unix:\/\/\/PATH/,
    );
    expect(refusal(() => parse([...BASE, '--docker-host', 'unix:///var/run/docker.sock']))).toMatch(
      /add --docker-plugins DIR/,
    );
  });
});

describe('--cni-sweep', () => {
  it('the default period unless given; a day at most, a second at least', () => {
    expect(parse(BASE).cniSweepMs).toBeUndefined();
    expect(parse([...BASE, '--cni-sweep', '5s']).cniSweepMs).toBe(5000);
    expect(parse(BASE, { VEIL_CNI_SWEEP: '2m' }).cniSweepMs).toBe(120_000);
    expect(refusal(() => parse([...BASE, '--cni-sweep', '30d']))).toMatch(/duration "30d"/);
    expect(refusal(() => parse([...BASE, '--cni-sweep', '25h']))).toMatch(/--cni-sweep 25h: at most 24h/);
    expect(refusal(() => parse([...BASE, '--cni-sweep', '500ms']))).toMatch(/below one second/);
  });
});
