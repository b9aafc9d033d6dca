import http from 'node:http';
import https from 'node:https';
import Fastify, { type FastifyInstance } from 'fastify';
import type { ApiHttpsOptions } from '../../src/api/listen.js';

export interface Reply {
  status: number;
  json: { code?: string; message?: string; [k: string]: unknown };
}

export interface Target {
  socketPath?: string;
  host?: string;
  port?: number;
  /** Present: https, trusting `ca`, presenting `cert`/`key` if given. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
}

/** One request on a fresh connection (agent: false: no TLS session is resumed across cases). */
export function call(target: Target, method: string, path: string, body?: unknown): Promise<Reply> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const options = {
    method,
    path,
    agent: false as const,
    ...(target.socketPath
      ? { socketPath: target.socketPath }
      : { host: target.host ?? '127.0.0.1', port: target.port }),
    headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
    ...(target.tls ?? {}),
  };
  return new Promise((resolve, reject) => {
    const req = (target.tls ? https : http).request(options, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : {} }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** A stand-in for buildApp: a health probe, one read and one mutation, counting the mutations that ran. */
export function tinyApp(
  server: { https?: ApiHttpsOptions },
  counter: { posts: number },
  logLines?: string[],
): FastifyInstance {
  const app = Fastify({
    https: server.https ?? null,
    logger: logLines
      ? {
          level: 'info',
          stream: {
            write: (line: string) => {
              logLines.push(line);
            },
          },
        }
      : false,
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/status', async () => ({ host: 'h' }));
  app.post('/things', async (req, reply) => {
    counter.posts++;
    return reply.code(201).send({ created: req.body });
  });
  app.delete('/things/:id', async () => ({ deleted: true }));
  return app;
}
