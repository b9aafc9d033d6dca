import { isIPv4, isIPv6, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import { ERRORS } from '../errors.js';

/*
 * Who may do what (docs/api.md "Listening and authentication"):
 *   - the unix socket: everything (local trust, like the Docker socket; the socket file's mode is
 *     the gate);
 *   - plain HTTP over TCP (loopback only, listen.ts): reads (GET, HEAD); any local user can connect;
 *   - TLS: every route but /healthz needs a client certificate that chains to the veil CA
 *     (socket.authorized, OpenSSL's verdict against the `ca` the listener was given) and carries the
 *     clientAuth extended key usage (RFC 5280 §4.2.1.12). Reads too: the networks, hosts and status
 *     are a map of the cluster. /healthz stays open for load balancers and health probes.
 * The TLS listener asks for a certificate but does not reject connections without one
 * (rejectUnauthorized: false), so the health probe gets in and this hook is where refusals happen.
 */

const READ_METHODS = new Set(['GET', 'HEAD']);
/** The one route a TLS client may reach without a certificate. */
const OPEN_OVER_TLS = '/healthz';
/** id-kp-clientAuth, RFC 5280 §4.2.1.12. */
const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';

export type ClientVerdict =
  | { ok: true; client: 'local' }
  | { ok: true; client: 'certificate'; commonName: string; serial: string; fingerprint256: string }
  | { ok: false; reason: string };

/** Who is on the other end of this connection: a local client, an authenticated certificate, or nobody known. */
export function authenticateConnection(socket: Socket): ClientVerdict {
  if (!(socket instanceof TLSSocket)) {
    // A unix socket has no remote address; its mode (0660, root's group) is the access control, as for
    // Docker's socket. Plain TCP has none, even on loopback: any local user (or host-network container)
    // can connect there, so it stays read-only. Mutations: the unix socket, or TLS with a client certificate.
    if (socket.remoteAddress === undefined) return { ok: true, client: 'local' };
    return {
      ok: false,
      reason: `plain HTTP over TCP from ${socket.remoteAddress} is read-only; use the unix socket or TLS with a client certificate`,
    };
  }
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return { ok: false, reason: 'no client certificate' };
  if (!socket.authorized) return { ok: false, reason: `client certificate not accepted (${verifyError(socket)})` };
  // OpenSSL's default purpose check passes a certificate without any EKU; we want clientAuth stated.
  if (!cert.ext_key_usage?.includes(CLIENT_AUTH_OID))
    return { ok: false, reason: 'client certificate lacks the clientAuth extended key usage' };
  const cn = cert.subject?.CN;
  return {
    ok: true,
    client: 'certificate',
    commonName: Array.isArray(cn) ? cn.join(',') : (cn ?? ''),
    serial: cert.serialNumber,
    fingerprint256: cert.fingerprint256,
  };
}

/** OpenSSL's verify code, e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE (a string at run time, whatever @types/node says). */
function verifyError(socket: TLSSocket): string {
  const e = socket.authorizationError as unknown;
  if (typeof e === 'string') return e;
  return e instanceof Error ? e.message : 'unverified';
}

/** Whether this request may go ahead without an authenticated client. */
function openToAnyone(socket: Socket, method: string, url: string): boolean {
  const path = url.split('?')[0];
  if (socket instanceof TLSSocket) return path === OPEN_OVER_TLS && READ_METHODS.has(method);
  return READ_METHODS.has(method);
}

/**
 * Refuse what an unauthenticated client may not do with 401 VEIL_ERR_UNAUTHENTICATED: over TLS every
 * route but /healthz, over plain TCP every mutation. Call before the instance is ready; it covers every
 * route, declared before or after.
 */
export function requireAuthenticatedClients(app: FastifyInstance): void {
  // onRequest runs before the body is read, so a refused client never gets it parsed.
  app.addHook('onRequest', async (req, reply) => {
    const verdict = authenticateConnection(req.raw.socket);
    if (!verdict.ok) {
      if (openToAnyone(req.raw.socket, req.method, req.url)) return;
      req.log.warn({ method: req.method, url: req.url, reason: verdict.reason }, 'unauthenticated request refused');
      return reply.code(ERRORS.VEIL_ERR_UNAUTHENTICATED.status).send({
        code: 'VEIL_ERR_UNAUTHENTICATED',
        message: `${ERRORS.VEIL_ERR_UNAUTHENTICATED.message}: ${verdict.reason}`,
      });
    }
    if (verdict.client === 'certificate' && !READ_METHODS.has(req.method)) {
      req.log.info(
        {
          method: req.method,
          url: req.url,
          clientCN: verdict.commonName,
          clientSerial: verdict.serial,
          clientFingerprint256: verdict.fingerprint256,
        },
        'authenticated mutation',
      );
    }
  });
}

/** 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 (RFC 1122 §3.2.1.3, RFC 4291 §2.5.3, §2.5.5.2). */
export function isLoopbackAddress(address: string): boolean {
  if (isIPv4(address)) return address.split('.')[0] === '127';
  if (!isIPv6(address) || address.includes('%')) return false;
  // The WHATWG URL parser canonicalises IPv6: "0:0::1" → "::1", "::ffff:127.0.0.1" → "::ffff:7f00:1".
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  return canonical === '::1' || /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(canonical);
}
