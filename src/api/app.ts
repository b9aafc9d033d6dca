import { readdirSync } from 'node:fs';
import Fastify, { type FastifyInstance } from 'fastify';
import { ERRORS, VeilError } from '../errors.js';
import type { GatewayStatus } from '../vxlan/gateway.js';
import type { Store, StoreFigures } from '../store/types.js';
import type { ApiHttpsOptions } from './listen.js';
import { renderMetrics } from './metrics.js';
import { registerNetworkStatusRoute } from './network-status.js';
import { registerKeyRoutes, type KeyScheduleApi } from './keys.js';
import { registerNetworkRoutes, type LocalHost } from './networks.js';
import { collectOpenApi } from './openapi.js';
import { errorSchema, gatewayStatusSchema } from './schemas.js';
import { VERSION } from '../model/version.js';

export interface AppDeps {
  gatewayStatus: () => GatewayStatus;
  /** The control plane; without it (static-key mode) only health, status and metrics are served. */
  store?: Store;
  /** This gateway's host: connect plumbs its containers before answering. */
  local?: LocalHost;
  /** The key schedule (cluster mode): GET /networks/{id}/keys, POST /networks/{id}/rotate. */
  keys?: KeyScheduleApi;
  version?: string;
  /** What the etcd client keeps open (cluster mode): GET /status `store`. */
  storeFigures?: () => StoreFigures;
}

/** The REST API, without listening (tests use inject()). */
export function buildApp(deps: AppDeps, options: { logger?: boolean; https?: ApiHttpsOptions } = {}): FastifyInstance {
  // Unknown fields are refused, not silently dropped (AJV's removeAdditional, Fastify's default).
  const app = Fastify({
    https: options.https ?? null,
    logger: options.logger ?? false,
    ajv: { customOptions: { removeAdditional: false } },
  });

  app.setErrorHandler((err, _req, reply) => {
    if (err instanceof VeilError) return reply.status(err.status).send({ code: err.code, message: err.message });
    if ((err as { validation?: unknown }).validation) {
      return reply.status(400).send({
        code: 'VEIL_ERR_REQUEST_INVALID',
        message: `${ERRORS.VEIL_ERR_REQUEST_INVALID.message}: ${(err as Error).message}`,
      });
    }
    app.log.error(err);
    return reply.status(500).send({ code: 'VEIL_ERR_INTERNAL', message: ERRORS.VEIL_ERR_INTERNAL.message });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.status(404).send({ code: 'VEIL_ERR_NOT_FOUND', message: `no route ${req.method} ${req.url}` }),
  );

  collectOpenApi(app, { title: 'veil', version: deps.version ?? VERSION });

  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness',
        response: { 200: { type: 'object', properties: { status: { type: 'string' } } } },
      },
    },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/metrics',
    {
      schema: { summary: 'Prometheus text: per-network and per-peer counters', response: { 200: { type: 'string' } } },
    },
    async (_req, reply) => {
      reply.type('text/plain; version=0.0.4');
      return renderMetrics(deps.gatewayStatus());
    },
  );

  app.get(
    '/status',
    {
      schema: {
        summary: 'The gateway: peers, networks, SAs and counters (never key bytes)',
        response: { 200: gatewayStatusSchema, 500: errorSchema },
      },
    },
    async () => ({
      ...deps.gatewayStatus(),
      process: processFigures(),
      ...(deps.storeFigures ? { store: deps.storeFigures() } : {}),
    }),
  );

  if (deps.store) registerNetworkRoutes(app, deps.store, deps.local);
  if (deps.store && deps.keys) registerKeyRoutes(app, deps.store, deps.keys);
  if (deps.store) registerNetworkStatusRoute(app, deps.store, deps.gatewayStatus, deps.keys);

  return app;
}

/** What a long-running process must not let grow (docs/operations.md "Footprint"). */
export function processFigures(): {
  rssBytes: number;
  heapUsedBytes: number;
  externalBytes: number;
  openFds: number;
  activeResources: Record<string, number>;
} {
  const m = process.memoryUsage();
  const activeResources: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) activeResources[kind] = (activeResources[kind] ?? 0) + 1;
  let openFds = -1;
  try {
    openFds = readdirSync('/proc/self/fd').length - 1; // the directory's own descriptor while it is read
  } catch {
    // no /proc: -1 says "unknown"
  }
  return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external, openFds, activeResources };
}
