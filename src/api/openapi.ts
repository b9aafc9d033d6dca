import type { FastifyInstance, RouteOptions } from 'fastify';

/*
 * The OpenAPI 3.0 document, built from the routes' own schemas (the same ones
 * fastify validates and serializes with), so the document cannot drift from the
 * behaviour. Served at GET /openapi.json.
 */

declare module 'fastify' {
  interface FastifySchema {
    /** One line for the OpenAPI document. */
    summary?: string;
  }
}

type Json = Record<string, unknown>;

export const OPENAPI_PATH = '/openapi.json';

/** Must be called before any route is registered: collects them as they are added. */
export function collectOpenApi(app: FastifyInstance, info: { title: string; version: string }): void {
  const routes: RouteOptions[] = [];
  app.addHook('onRoute', (route) => {
    if (
      route.url !== OPENAPI_PATH &&
      route.method !== 'HEAD' &&
      !(Array.isArray(route.method) && route.method.includes('HEAD'))
    )
      routes.push(route);
  });
  let doc: Json | undefined;
  app.get(
    OPENAPI_PATH,
    { schema: { summary: 'This document', response: { 200: { type: 'object', additionalProperties: true } } } },
    async () => (doc ??= buildDocument(routes, info)),
  );
}

function buildDocument(routes: RouteOptions[], info: { title: string; version: string }): Json {
  const paths: Record<string, Json> = {};
  for (const route of routes) {
    const path = route.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    const schema = (route.schema ?? {}) as Json & {
      params?: Json;
      body?: Json;
      response?: Record<string, Json>;
      summary?: string;
    };
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) {
      const op: Json = {};
      if (schema.summary) op.summary = schema.summary;
      const params = schema.params as { properties?: Record<string, Json>; required?: string[] } | undefined;
      if (params?.properties) {
        op.parameters = Object.entries(params.properties).map(([name, s]) => ({
          name,
          in: 'path',
          required: true,
          schema: s,
        }));
      }
      if (schema.body) op.requestBody = { required: true, content: { 'application/json': { schema: schema.body } } };
      const responses: Json = {};
      for (const [status, s] of Object.entries(schema.response ?? {})) {
        const code = status.replace(/xx$/i, 'XX');
        responses[code] =
          s.type === 'null'
            ? { description: describe(code) }
            : {
                description: describe(code),
                content: {
                  [status === '200' && s.type === 'string' ? 'text/plain' : 'application/json']: { schema: s },
                },
              };
      }
      op.responses = Object.keys(responses).length > 0 ? responses : { 200: { description: 'OK' } };
      (paths[path] ??= {})[method.toLowerCase()] = op;
    }
  }
  return { openapi: '3.0.3', info, paths };
}

function describe(code: string): string {
  if (code.startsWith('2')) return 'Success';
  if (code.startsWith('4')) return 'Client error: {code, message} from the error registry';
  return 'Server error: {code, message} from the error registry';
}
