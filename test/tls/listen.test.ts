import { chmodSync, copyFileSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/api/app.js';
import { isLoopbackAddress } from '../../src/api/auth.js';
import { DEFAULT_API_SOCKET, listenApi, planApiListen, type ApiListenOptions } from '../../src/api/listen.js';
import { call, tinyApp } from './client.js';
import { makePki, pem, type TestPki } from './pki.js';

const root = mkdtempSync(join(tmpdir(), 'veil-listen-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let pki: TestPki;
let tls: NonNullable<ApiListenOptions['tls']>;
beforeAll(async () => {
  pki = await makePki(root);
  tls = { cert: pki.server.cert, key: pki.server.key, ca: pki.caCert };
});

function refusal(opts: ApiListenOptions): unknown {
  try {
    planApiListen(opts);
  } catch (err) {
    return err;
  }
  return undefined;
}

describe('isLoopbackAddress', () => {
  it.each(['127.0.0.1', '127.255.0.9', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::ffff:7f01:203'])(
    '%s is loopback',
    (a) => {
      expect(isLoopbackAddress(a)).toBe(true);
    },
  );
  it.each([
    '0.0.0.0',
    '::',
    '10.0.0.1',
    '128.0.0.1',
    '::2',
    '::ffff:10.0.0.1',
    '::127.0.0.1',
    'fe80::1%lo',
    'localhost',
    '127.1',
  ])('%s is not', (a) => {
    expect(isLoopbackAddress(a)).toBe(false);
  });
});

describe('planApiListen', () => {
  it('defaults to the unix socket only', () => {
    expect(planApiListen({})).toEqual({ socket: DEFAULT_API_SOCKET });
    expect(DEFAULT_API_SOCKET).toBe('/run/veil/veil.sock');
  });

  it.each([
    ['127.0.0.1:8080', '127.0.0.1', 8080],
    ['127.1.2.3:80', '127.1.2.3', 80],
    ['[::1]:8080', '::1', 8080],
    ['[::ffff:127.0.0.1]:1', '::ffff:127.0.0.1', 1],
    ['localhost:8080', '127.0.0.1', 8080],
    ['LocalHost:0', '127.0.0.1', 0],
  ])('lets loopback %s speak plain HTTP', (listen, host, port) => {
    expect(planApiListen({ socket: '/tmp/s.sock', listen })).toEqual({
      socket: '/tmp/s.sock',
      tcp: { host, port, loopback: true },
    });
  });

  // Refusal 1: off loopback, no TLS, no listener.
  it.each([
    '0.0.0.0:8443',
    '[::]:8443',
    '10.0.0.1:8443',
    '[2001:db8::1]:8443',
    '[::ffff:10.0.0.1]:8443',
    'gw1.example:8443',
  ])('refuses non-loopback %s without TLS: VEIL_ERR_API_TLS_REQUIRED', (listen) => {
    const err = refusal({ listen });
    expect(err).toMatchObject({ name: 'VeilError', code: 'VEIL_ERR_API_TLS_REQUIRED', status: 400 });
    expect((err as Error).message).toContain(listen);
  });

  it('plans TLS with client certificates requested but not required at the handshake', () => {
    const plan = planApiListen({ listen: '0.0.0.0:8443', tls });
    expect(plan.tcp).toMatchObject({ host: '0.0.0.0', port: 8443, loopback: false });
    expect(plan.tcp?.https).toMatchObject({ requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' });
    expect(plan.tcp?.https?.cert.equals(pem(pki.server.cert))).toBe(true);
    expect(plan.tcp?.https?.key.equals(pem(pki.server.key))).toBe(true);
    expect(plan.tcp?.https?.ca.equals(pem(pki.caCert))).toBe(true);
    // TLS on loopback too, when asked for.
    expect(planApiListen({ listen: '127.0.0.1:8443', tls }).tcp?.https).toBeDefined();
  });

  it('never prints the private key of the plan', () => {
    const plan = planApiListen({ listen: '[::]:8443', tls });
    for (const printed of [
      JSON.stringify(plan),
      inspect(plan, { depth: 10 }),
      inspect(plan, { depth: 10, showHidden: true }),
    ]) {
      expect(printed).not.toMatch(/PRIVATE KEY|BEGIN/);
      expect(printed).toContain('<redacted>');
    }
  });

  it.each(['8443', ':8443', '::1:8443', '[::1]', '1.2.3.4:70000', '1.2.3.4:', 'a b:1', '[10.0.0.1]:1', '-x:1'])(
    'refuses the listen address %s',
    (listen) => {
      expect(refusal({ listen, tls })).toMatchObject({ code: 'VEIL_ERR_CONFIG_INVALID' });
    },
  );

  it('refuses TLS without a listen address, and an over-long socket path', () => {
    expect(refusal({ tls })).toMatchObject({ code: 'VEIL_ERR_CONFIG_INVALID' });
    expect(refusal({ socket: `/tmp/${'x'.repeat(110)}` })).toMatchObject({ code: 'VEIL_ERR_CONFIG_INVALID' });
  });

  it('refuses a key others can read, a key of another certificate, and a missing file', () => {
    const loose = join(root, 'loose.key');
    copyFileSync(pki.server.key, loose);
    chmodSync(loose, 0o644);
    expect(refusal({ listen: '0.0.0.0:1', tls: { ...tls, key: loose } })).toMatchObject({
      code: 'VEIL_ERR_CONFIG_INSECURE',
    });
    expect(refusal({ listen: '0.0.0.0:1', tls: { ...tls, key: pki.client.key } })).toMatchObject({
      code: 'VEIL_ERR_CONFIG_INVALID',
    });
    expect(refusal({ listen: '0.0.0.0:1', tls: { ...tls, ca: join(root, 'nope.crt') } })).toMatchObject({
      code: 'VEIL_ERR_CONFIG_INVALID',
    });
  });
});

describe('listenApi', () => {
  it('serves the socket (mode 0660, directory created, trusted to mutate) and plain loopback (read-only: any local user can reach it)', async () => {
    const socket = join(root, 'run', 'veil.sock');
    const counter = { posts: 0 };
    const api = await listenApi((server) => tinyApp(server, counter), planApiListen({ socket, listen: '127.0.0.1:0' }));
    try {
      expect(statSync(socket).isSocket()).toBe(true);
      expect(statSync(socket).mode & 0o777).toBe(0o660);
      expect(statSync(join(root, 'run')).mode & 0o777).toBe(0o750);
      expect(api.addresses[0]).toBe(socket);
      expect(api.addresses[1]).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const port = Number(new URL(api.addresses[1]!).port);
      expect(await call({ socketPath: socket }, 'POST', '/things', { a: 1 })).toMatchObject({ status: 201 });
      expect(await call({ port }, 'POST', '/things', { a: 2 })).toMatchObject({
        status: 401,
        json: { code: 'VEIL_ERR_UNAUTHENTICATED' },
      });
      expect(await call({ port }, 'GET', '/status')).toEqual({ status: 200, json: { host: 'h' } });
      expect(counter.posts).toBe(1);
    } finally {
      await api.close();
    }
  });

  it('serves buildApp on the socket', async () => {
    const socket = join(root, 'build-app.sock');
    const api = await listenApi(
      () =>
        buildApp({
          gatewayStatus: () => ({
            host: 'h',
            peers: [],
            networks: [],
            pairs: [],
            unattributedDrops: {},
            sendFailures: 0,
          }),
        }),
      planApiListen({ socket }),
    );
    try {
      expect(await call({ socketPath: socket }, 'GET', '/status')).toMatchObject({ status: 200, json: { host: 'h' } });
    } finally {
      await api.close();
    }
  });

  it('removes a stale socket but refuses a live one or a file that is not a socket', async () => {
    const dir = mkdtempSync(join(root, 'stale-'));
    const socket = join(dir, 'veil.sock');
    // A socket file nobody listens on: listen elsewhere, move the file, close (which unlinks only the old name).
    const dead = createServer();
    await new Promise<void>((r) => dead.listen(join(dir, 'tmp.sock'), r));
    renameSync(join(dir, 'tmp.sock'), socket);
    await new Promise((r) => dead.close(r));
    expect(statSync(socket).isSocket()).toBe(true);
    const api = await listenApi((server) => tinyApp(server, { posts: 0 }), planApiListen({ socket }));
    await api.close();

    const live: Server = createServer();
    await new Promise<void>((r) => live.listen(socket, r));
    try {
      await expect(
        listenApi((server) => tinyApp(server, { posts: 0 }), planApiListen({ socket })),
      ).rejects.toMatchObject({ code: 'VEIL_ERR_CONFIG_INVALID', message: /in use/ });
    } finally {
      await new Promise((r) => live.close(r));
    }

    writeFileSync(socket, 'not a socket');
    await expect(listenApi((server) => tinyApp(server, { posts: 0 }), planApiListen({ socket }))).rejects.toMatchObject(
      { code: 'VEIL_ERR_CONFIG_INVALID', message: /not a socket/ },
    );
  });
});
