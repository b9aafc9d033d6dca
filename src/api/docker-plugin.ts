import Fastify, { type FastifyInstance } from 'fastify';
import { VeilError } from '../errors.js';
import type { DockerPlugin } from '../docker/plugin.js';
import { PLUGIN_CONTENT_TYPE } from '../docker/protocol.js';

/*
 * The Docker plugin's HTTP side (docs/docker.md "Protocol"): one POST route per protocol call, each
 * answered within CALL_BOUND_MS. A failure is {"Err": message} with the error's HTTP status: Docker's
 * plugin client reads Err from any non-200 answer, for network and IPAM calls alike (an IPAM answer
 * of 200 carries its error under another field name), and prints the message; never a stack, never
 * key material.
 */

/** Every call answers within this bound (etcd or Docker away: an Err, not a hung `docker run`). */
export const CALL_BOUND_MS = 10_000;

type Handler = (plugin: DockerPlugin, body: never) => unknown;

const CALLS: Record<string, Handler> = {
  '/Plugin.Activate': (p) => p.activate(),
  '/IpamDriver.GetCapabilities': (p) => p.ipamCapabilities(),
  '/IpamDriver.GetDefaultAddressSpaces': (p) => p.addressSpaces(),
  '/IpamDriver.RequestPool': (p, b) => p.requestPool(b),
  '/IpamDriver.ReleasePool': (p, b) => p.releasePool(b),
  '/IpamDriver.RequestAddress': (p, b) => p.requestAddress(b),
  '/IpamDriver.ReleaseAddress': (p, b) => p.releaseAddress(b),
  '/NetworkDriver.GetCapabilities': (p) => p.networkCapabilities(),
  '/NetworkDriver.CreateNetwork': (p, b) => p.createNetwork(b),
  '/NetworkDriver.DeleteNetwork': (p, b) => p.deleteNetwork(b),
  '/NetworkDriver.CreateEndpoint': (p, b) => p.createEndpoint(b),
  '/NetworkDriver.EndpointOperInfo': (p, b) => p.endpointInfo(b),
  '/NetworkDriver.DeleteEndpoint': (p, b) => p.deleteEndpoint(b),
  '/NetworkDriver.Join': (p, b) => p.join(b),
  '/NetworkDriver.Leave': (p, b) => p.leave(b),
  '/NetworkDriver.AllocateNetwork': (p) => p.nothing(),
  '/NetworkDriver.FreeNetwork': (p) => p.nothing(),
  '/NetworkDriver.DiscoverNew': (p) => p.nothing(),
  '/NetworkDriver.DiscoverDelete': (p) => p.nothing(),
  '/NetworkDriver.ProgramExternalConnectivity': (p) => p.nothing(),
  '/NetworkDriver.RevokeExternalConnectivity': (p) => p.nothing(),
};

/** Docker sends the plugin media type, JSON, or nothing at all (Plugin.Activate). */
const bodySchema = { type: 'object' } as const;
const answerSchema = { 200: { type: 'object', additionalProperties: true } } as const;

function withinBound<T>(work: Promise<T>, call: string, boundMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new VeilError(
            'VEIL_ERR_DOCKER_TIMEOUT',
            `${call}: no answer within ${boundMs} ms (etcd or Docker unreachable?)`,
          ),
        ),
      boundMs,
    );
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

export interface DockerPluginAppOptions {
  log?: (level: 'info' | 'warn', event: string, fields?: Record<string, unknown>) => void;
  boundMs?: number;
}

/** The plugin's routes, without listening (tests use inject()). */
export function buildDockerPluginApp(plugin: DockerPlugin, options: DockerPluginAppOptions = {}): FastifyInstance {
  const app = Fastify({ logger: false });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => {
    if (body === '') return done(null, {});
    try {
      done(null, JSON.parse(body as string) ?? {});
    } catch {
      done(new VeilError('VEIL_ERR_REQUEST_INVALID', 'the body is not JSON'), undefined);
    }
  });
  const answer = (reply: { type(t: string): unknown }, value: unknown) => {
    reply.type(PLUGIN_CONTENT_TYPE);
    return value;
  };
  app.setErrorHandler((err, req, reply) => {
    const message =
      err instanceof VeilError
        ? err.message
        : (err as { validation?: unknown }).validation
          ? `veil: ${req.url}: ${(err as Error).message}`
          : `veil: ${req.url}: internal error`;
    options.log?.('warn', 'docker plugin call failed', { call: req.url, error: message });
    const status = err instanceof VeilError ? err.status : (err as { validation?: unknown }).validation ? 400 : 500;
    return reply.status(status).type(PLUGIN_CONTENT_TYPE).send({ Err: message });
  });
  app.setNotFoundHandler((req, reply) =>
    reply
      .status(404)
      .type(PLUGIN_CONTENT_TYPE)
      .send({ Err: `veil does not implement ${req.url}` }),
  );
  // Docker posts some calls (Plugin.Activate) with no body and no content type.
  app.addHook('preValidation', async (req) => {
    req.body ??= {};
  });
  for (const [url, handler] of Object.entries(CALLS)) {
    app.post(url, { schema: { body: bodySchema, response: answerSchema } }, async (req, reply) => {
      const value = await withinBound(
        Promise.resolve().then(() => handler(plugin, (req.body ?? {}) as never)),
        url.slice(1),
        options.boundMs ?? CALL_BOUND_MS,
      );
      return answer(reply, value);
    });
  }
  return app;
}
