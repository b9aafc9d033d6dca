import { X509Certificate, createPrivateKey } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { connect, isIP, isIPv6 } from 'node:net';
import { dirname } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { VeilError } from '../errors.js';
import { isLoopbackAddress, requireAuthenticatedClients } from './auth.js';

/*
 * Where the API listens. Always a unix socket (local trust, mode 0660); optionally
 * one TCP address. Loopback may speak plain HTTP; any other address (0.0.0.0 and
 * :: included) must be TLS, asking every client for a certificate from the veil
 * CA (src/tls/ca.ts). The handshake does not reject clients without one, so a health
 * probe gets in; auth.ts refuses everything else they ask.
 *
 * One fastify instance binds one server, so the socket and the TCP listener are
 * two instances from the same factory (the caller's buildApp), sharing its deps.
 */

export const DEFAULT_API_SOCKET = '/run/veil/veil.sock';
/** Linux sun_path is 108 bytes including the terminating NUL (unix(7)). */
const MAX_SOCKET_PATH_BYTES = 107;
const SOCKET_MODE = 0o660;
/** Mode for a socket directory we create: others cannot reach the socket even before its chmod. */
const SOCKET_DIR_MODE = 0o750;
const HOSTNAME_RE =
  /^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export interface ApiListenOptions {
  /** Unix socket path; default DEFAULT_API_SOCKET. */
  socket?: string;
  /** "host:port", IPv6 in brackets: "127.0.0.1:8443", "[::]:8443", "localhost:8443". */
  listen?: string;
  /** PEM file paths: this gateway's server certificate and key, and the CA that signs client certificates. */
  tls?: { cert: string; key: string; ca: string };
}

/** Fastify's `https` options for the TCP listener (node:tls createServer options). */
export interface ApiHttpsOptions {
  key: Buffer;
  cert: Buffer;
  ca: Buffer;
  /** Ask every client for a certificate... */
  requestCert: true;
  /** ...but let those without one in: /healthz stays open; auth.ts refuses the rest. */
  rejectUnauthorized: false;
  minVersion: 'TLSv1.2';
}

export interface ApiListenPlan {
  socket: string;
  tcp?: {
    /** What to bind: an IP literal or a host name ("localhost" is bound as 127.0.0.1). */
    host: string;
    port: number;
    loopback: boolean;
    /** Present whenever TLS files were given; always present when not loopback. */
    https?: ApiHttpsOptions;
  };
}

/** Validate the listen options, reading the TLS files; throws VeilError. */
export function planApiListen(opts: ApiListenOptions): ApiListenPlan {
  const socket = opts.socket ?? DEFAULT_API_SOCKET;
  if (socket === '' || socket.includes('\0') || Buffer.byteLength(socket) > MAX_SOCKET_PATH_BYTES) {
    invalid(`API socket path ${JSON.stringify(socket)}: 1 to ${MAX_SOCKET_PATH_BYTES} bytes`);
  }
  if (opts.listen === undefined) {
    if (opts.tls) invalid('TLS files given but no API listen address (the unix socket does not use TLS)');
    return { socket };
  }
  const { host, port } = parseHostPort(opts.listen);
  const loopback = isLoopbackHost(host);
  if (!loopback && !opts.tls) {
    throw new VeilError(
      'VEIL_ERR_API_TLS_REQUIRED',
      `${opts.listen} is not a loopback address; give a server certificate, its key and the CA (veil ca init, veil ca issue --server)`,
    );
  }
  // "localhost" is whatever the resolver says; bind the address that makes it loopback.
  const bindHost = host.toLowerCase() === 'localhost' ? '127.0.0.1' : host;
  return {
    socket,
    tcp: { host: bindHost, port, loopback, ...(opts.tls ? { https: loadHttpsOptions(opts.tls) } : {}) },
  };
}

export interface ListeningApi {
  /** The socket instance first, then the TCP one if planned. */
  readonly instances: FastifyInstance[];
  /** What each instance is bound to: the socket path, then "https://host:port" or "http://host:port". */
  readonly addresses: string[];
  close(): Promise<void>;
}

/**
 * Serve the planned listeners, each an instance from `build` (passed the https
 * options for the TLS listener, to hand to Fastify({ https })). Every instance gets
 * requireAuthenticatedClients, so `build` must not have called ready() yet.
 */
export async function listenApi(
  build: (server: { https?: ApiHttpsOptions }) => FastifyInstance,
  plan: ApiListenPlan,
): Promise<ListeningApi> {
  const instances: FastifyInstance[] = [];
  const addresses: string[] = [];
  const close = async () => {
    await Promise.allSettled(instances.map((app) => app.close()));
  };
  try {
    const local = build({});
    requireAuthenticatedClients(local);
    instances.push(local);
    await prepareSocketPath(plan.socket);
    await local.listen({ path: plan.socket });
    chmodSync(plan.socket, SOCKET_MODE);
    addresses.push(plan.socket);

    if (plan.tcp) {
      const { host, port, https } = plan.tcp;
      const remote = build(https ? { https } : {});
      requireAuthenticatedClients(remote);
      instances.push(remote);
      await remote.listen({ host, port });
      const bound = remote.server.address();
      const boundPort = typeof bound === 'object' && bound ? bound.port : port;
      addresses.push(`${https ? 'https' : 'http'}://${isIPv6(host) ? `[${host}]` : host}:${boundPort}`);
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { instances, addresses, close };
}

function isLoopbackHost(host: string): boolean {
  return host.toLowerCase() === 'localhost' || isLoopbackAddress(host);
}

function parseHostPort(listen: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(listen) ?? /^([^:[\]]+):(\d{1,5})$/.exec(listen);
  const host = m?.[1];
  const port = Number(m?.[2]);
  if (!m || !host || port > 65_535)
    invalid(`API listen address ${JSON.stringify(listen)}: host:port, IPv6 in brackets ([::1]:8443)`);
  if (listen.startsWith('[') ? !isIPv6(host) : !(isIP(host) || HOSTNAME_RE.test(host)))
    invalid(`API listen host ${JSON.stringify(host)}`);
  return { host, port };
}

function loadHttpsOptions(files: { cert: string; key: string; ca: string }): ApiHttpsOptions {
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      return invalid(`cannot read the API TLS ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  };
  const cert = read('certificate', files.cert);
  const ca = read('CA certificate', files.ca);
  const key = read('key', files.key);
  // Like the static configuration file: a key others can read is refused, not used.
  if ((statSync(files.key).mode & 0o077) !== 0)
    throw new VeilError('VEIL_ERR_CONFIG_INSECURE', `${files.key} (chmod 600 it)`);
  try {
    if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key)))
      invalid(`${files.key} is not the key of ${files.cert}`);
    new X509Certificate(ca);
  } catch (err) {
    if (err instanceof VeilError) throw err;
    // OpenSSL's parse errors name no key bytes, but keep to our own words.
    invalid(
      `the API TLS files ${files.cert}, ${files.key}, ${files.ca} must be PEM certificates and a PEM private key`,
    );
  }
  return redactedWhenPrinted({ key, cert, ca, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' });
}

/**
 * The options carry the private key, so JSON.stringify (pino) and util.inspect show
 * `<redacted>` for it. Non-enumerable, so the copy node:https makes of the options
 * leaves these two behind.
 */
function redactedWhenPrinted(options: ApiHttpsOptions): ApiHttpsOptions {
  const printable = () => ({
    key: '<redacted>',
    cert: `<${options.cert.length} bytes>`,
    ca: `<${options.ca.length} bytes>`,
    requestCert: options.requestCert,
    rejectUnauthorized: options.rejectUnauthorized,
    minVersion: options.minVersion,
  });
  Object.defineProperty(options, 'toJSON', { value: printable, enumerable: false });
  Object.defineProperty(options, Symbol.for('nodejs.util.inspect.custom'), { value: printable, enumerable: false });
  return options;
}

/**
 * Make room for the socket: create its directory (0750) if missing; remove a stale
 * socket left by a dead gateway; refuse a live one (another gateway is serving)
 * and anything that is not a socket.
 */
/** Serves `app` on a unix socket (mode 0660): a stale socket file is replaced, a live one refused. */
export async function listenOnSocket(app: FastifyInstance, path: string): Promise<void> {
  if (path === '' || path.includes('\0') || Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES)
    invalid(`socket path ${JSON.stringify(path)}: 1 to ${MAX_SOCKET_PATH_BYTES} bytes`);
  await prepareSocketPath(path);
  await app.listen({ path });
  chmodSync(path, SOCKET_MODE);
}

async function prepareSocketPath(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: SOCKET_DIR_MODE });
  let stat;
  try {
    stat = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!stat.isSocket()) invalid(`${path} exists and is not a socket`);
  const probe = await probeSocket(path);
  if (probe === 'live') invalid(`${path} is in use by a running process`);
  if (probe !== 'stale') invalid(`${path}: cannot tell whether it is in use (${probe})`);
  unlinkSync(path);
}

function probeSocket(path: string): Promise<'live' | 'stale' | string> {
  return new Promise((resolve) => {
    const probe = connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve('live');
    });
    // ECONNREFUSED: nobody is listening; the file is stale.
    probe.once('error', (err: NodeJS.ErrnoException) =>
      resolve(err.code === 'ECONNREFUSED' ? 'stale' : (err.code ?? 'error')),
    );
  });
}

function invalid(detail: string): never {
  throw new VeilError('VEIL_ERR_CONFIG_INVALID', detail);
}
