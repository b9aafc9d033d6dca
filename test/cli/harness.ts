/*
 * Runs the `veil` CLI in-process against an API listening on a real unix socket (or TCP),
 * capturing stdout, stderr and the exit code.
 */

import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import type { CliIo } from '../../src/cli/network.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export async function cli(
  run: (argv: string[], io: CliIo) => Promise<number>,
  argv: string[],
  env: Record<string, string | undefined> = {},
): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await run(argv, {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env,
  });
  return { code, stdout, stderr };
}

/** Listens on `<dir>/<name>.sock`; returns the CLI's --api address for it. */
export async function listenUnix(app: FastifyInstance, dir: string, name: string): Promise<string> {
  const path = join(dir, `${name}.sock`);
  await app.listen({ path });
  return `unix:${path}`;
}

export interface StubRequest {
  method: string;
  url: string;
  body: unknown;
}

export const STUB_HOSTS = [
  {
    Id: 'gw-b',
    Index: 2,
    Address: '198.18.0.2',
    OS: 'linux',
    Arch: 'arm64',
    Version: '0.1.0',
    Incarnation: 'i2',
    PublicKey: 'cd'.repeat(32),
  },
  {
    Id: 'gw-a',
    Index: 1,
    Address: '198.18.0.1',
    OS: 'linux',
    Arch: 'amd64',
    Version: '0.1.0',
    Incarnation: 'i1',
    PublicKey: 'ab'.repeat(32),
  },
  {
    Id: 'win-1',
    Index: 3,
    Address: '198.18.0.3',
    OS: 'windows',
    Arch: 'amd64',
    Version: '0.1.0',
    Incarnation: 'i3',
    PublicKey: 'ef'.repeat(32),
    Warning:
      'Windows hosts cannot encrypt overlay traffic: traffic of the Windows host(s) win-1 on the encrypted network(s) secure will not be protected',
  },
];

/**
 * A TEST DOUBLE of the veil API for the routes the real app does not serve yet
 * (POST /networks/{id}/connect, POST /networks/{id}/disconnect, GET /hosts), answering by the
 * contract the CLI is written against. It records every request so tests can check the exact
 * bodies the CLI sends. Network "secure" answers connect with a Windows warning; any network
 * other than "front" and "secure" is unknown (404, VEIL_ERR_NOT_FOUND).
 */
export function apiStub(options: { https?: { key: Buffer; cert: Buffer; ca: Buffer } } = {}): {
  app: FastifyInstance;
  requests: StubRequest[];
} {
  // The https instance differs from the http one only in its server type; routes are the same.
  const app: FastifyInstance = options.https
    ? (Fastify({
        https: { ...options.https, requestCert: true, rejectUnauthorized: true },
      }) as unknown as FastifyInstance)
    : Fastify();
  const requests: StubRequest[] = [];
  app.addHook('preHandler', async (req) => {
    requests.push({ method: req.method, url: req.url, body: req.body });
  });
  const known = new Set(['front', 'secure']);
  const notFound = (id: string) => ({ code: 'VEIL_ERR_NOT_FOUND', message: `not found: network ${id}` });

  app.get('/hosts', async () => STUB_HOSTS);
  app.get('/networks', async () => []);
  app.post<{
    Params: { id: string };
    Body: { Container: string; EndpointConfig?: { IPAMConfig?: { IPv4Address?: string } } };
  }>('/networks/:id/connect', async (req, reply) => {
    if (!known.has(req.params.id)) return reply.status(404).send(notFound(req.params.id));
    const ip = req.body.EndpointConfig?.IPAMConfig?.IPv4Address ?? '10.0.9.2';
    return {
      EndpointID: 'e'.repeat(64),
      Name: req.body.Container,
      Host: 'gw-a',
      IPv4Address: `${ip}/24`,
      MacAddress: '02:42:0a:00:09:02',
      Aliases: [],
      Warning:
        req.params.id === 'secure'
          ? 'Windows hosts cannot encrypt overlay traffic: traffic of the Windows host(s) win-1 on this encrypted network will not be protected'
          : '',
    };
  });
  app.post<{ Params: { id: string } }>('/networks/:id/disconnect', async (req, reply) => {
    if (!known.has(req.params.id)) return reply.status(404).send(notFound(req.params.id));
    return reply.status(204).send();
  });
  return { app, requests };
}
