// connect / disconnect / hosts / openapi through inject(), on the in-memory store.
import { describe, expect, it } from 'vitest';
import { buildApp } from '../../src/api/app.js';
import { MemoryBackend } from '../../src/store/memory.js';
import { memoryImpl } from '../store/harness.js';
import { describeEndpointsApi, emptyStatus } from './endpoints-suite.js';

describeEndpointsApi(memoryImpl());

describe('the OpenAPI document', () => {
  it('is served and lists every route with its schemas', async () => {
    const app = buildApp({ gatewayStatus: () => emptyStatus, store: new MemoryBackend().client() });
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
    expect(doc.openapi).toBe('3.0.3');
    for (const [path, method] of [
      ['/networks', 'post'],
      ['/networks', 'get'],
      ['/networks/{id}', 'get'],
      ['/networks/{id}', 'delete'],
      ['/networks/{id}/connect', 'post'],
      ['/networks/{id}/disconnect', 'post'],
      ['/hosts', 'get'],
      ['/healthz', 'get'],
      ['/metrics', 'get'],
      ['/status', 'get'],
    ] as const) {
      expect(doc.paths[path]?.[method], `${method} ${path}`).toBeDefined();
    }
    expect(doc.paths['/networks/{id}/connect'].post.requestBody.content['application/json'].schema.required).toEqual([
      'Container',
    ]);
    expect(doc.paths['/networks/{id}'].get.parameters[0]).toMatchObject({ name: 'id', in: 'path' });
    await app.close();
  });
});
