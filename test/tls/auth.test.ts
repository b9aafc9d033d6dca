import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listenApi, planApiListen, type ListeningApi } from '../../src/api/listen.js';
import { call, tinyApp, type Target } from './client.js';
import { makePki, pem, type KeyPair, type TestPki } from './pki.js';

/*
 * A real HTTPS listener on 127.0.0.1 with the veil CA's server certificate, and
 * clients presenting no certificate, the veil CA's client certificate, another
 * CA's, a server certificate, the CA's own, and a leaf with no EKU at all.
 */

const root = mkdtempSync(join(tmpdir(), 'veil-auth-'));
let pki: TestPki;
let api: ListeningApi;
let port: number;
const counter = { posts: 0 };
const logLines: string[] = [];

beforeAll(async () => {
  pki = await makePki(root);
  const plan = planApiListen({
    socket: join(root, 'veil.sock'),
    listen: '127.0.0.1:0',
    tls: { cert: pki.server.cert, key: pki.server.key, ca: pki.caCert },
  });
  api = await listenApi((server) => tinyApp(server, counter, logLines), plan);
  port = Number(new URL(api.addresses[1]!).port);
});
afterAll(async () => {
  await api?.close();
  rmSync(root, { recursive: true, force: true });
});

const as = (pair?: KeyPair): Target => ({
  port,
  tls: { ca: pem(pki.caCert), ...(pair ? { cert: pem(pair.cert), key: pem(pair.key) } : {}) },
});

describe('over TLS every route but /healthz needs a veil client certificate', () => {
  it('listens on https', () => {
    expect(api.addresses[1]).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it('answers the health probe without a client certificate, and nothing else: reads map the cluster', async () => {
    expect(await call(as(), 'GET', '/healthz')).toEqual({ status: 200, json: { status: 'ok' } });
    expect(await call(as(), 'GET', '/healthz?verbose=1')).toMatchObject({ status: 200 });
    const read = await call(as(), 'GET', '/status');
    expect(read).toEqual({
      status: 401,
      json: {
        code: 'VEIL_ERR_UNAUTHENTICATED',
        message: 'this request needs a client certificate issued by the veil CA: no client certificate',
      },
    });
    // Paths that only look like the probe get no exception.
    expect((await call(as(), 'GET', '/healthz/../status')).status).toBe(401);
    expect((await call(as(), 'POST', '/healthz')).status).toBe(401);
    expect(await call(as(pki.client), 'GET', '/status')).toEqual({ status: 200, json: { host: 'h' } });
  });

  // Refusal 2.
  it('refuses a mutation without a client certificate: 401 VEIL_ERR_UNAUTHENTICATED, handler not run', async () => {
    const before = counter.posts;
    const r = await call(as(), 'POST', '/things', { name: 'x' });
    expect(r.status).toBe(401);
    expect(r.json).toEqual({
      code: 'VEIL_ERR_UNAUTHENTICATED',
      message: 'this request needs a client certificate issued by the veil CA: no client certificate',
    });
    expect((await call(as(), 'DELETE', '/things/1')).status).toBe(401);
    expect(counter.posts).toBe(before);
  });

  it('accepts a mutation with a client certificate from the veil CA', async () => {
    const before = counter.posts;
    expect(await call(as(pki.client), 'POST', '/things', { name: 'x' })).toEqual({
      status: 201,
      json: { created: { name: 'x' } },
    });
    expect((await call(as(pki.client), 'DELETE', '/things/1')).status).toBe(200);
    expect(counter.posts).toBe(before + 1);
    const logged = logLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l['msg'] === 'authenticated mutation');
    expect(logged.at(-1)).toMatchObject({ clientCN: 'operator', method: 'DELETE', url: '/things/1' });
    expect(logLines.join('')).not.toMatch(/PRIVATE KEY|BEGIN/);
  });

  it('refuses a client certificate from another CA', async () => {
    const r = await call(as(pki.foreignClient), 'POST', '/things', {});
    expect(r.status).toBe(401);
    expect(r.json.code).toBe('VEIL_ERR_UNAUTHENTICATED');
    expect(r.json.message).toMatch(/not accepted \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/);
    // Reads too: a certificate of another CA is no better than none.
    expect((await call(as(pki.foreignClient), 'GET', '/status')).status).toBe(401);
  });

  it('refuses a server certificate presented as a client certificate (no clientAuth EKU)', async () => {
    const r = await call(as(pki.server), 'POST', '/things', {});
    expect(r.status).toBe(401);
    expect(r.json.code).toBe('VEIL_ERR_UNAUTHENTICATED');
    // OpenSSL's own purpose check (ssl_client) already fails it.
    expect(r.json.message).toMatch(/INVALID_PURPOSE/);
  });

  it('refuses the CA certificate itself (no digitalSignature, no clientAuth)', async () => {
    const r = await call(as(pki.ca), 'POST', '/things', {});
    expect(r.status).toBe(401);
    expect(r.json.message).toMatch(/INVALID_PURPOSE/);
  });

  it('refuses a veil-CA leaf without any extended key usage, which OpenSSL alone would accept', async () => {
    const r = await call(as(pki.noEkuClient), 'POST', '/things', {});
    expect(r.status).toBe(401);
    expect(r.json.message).toMatch(/lacks the clientAuth extended key usage/);
  });

  it('still trusts the unix socket without a certificate', async () => {
    expect((await call({ socketPath: join(root, 'veil.sock') }, 'POST', '/things', {})).status).toBe(201);
  });
});
