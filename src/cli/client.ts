/*
 * The veil API client the `veil` command uses: JSON over HTTP on a unix socket, plain HTTP
 * (loopback) or HTTPS with a client certificate (mutual TLS). node:http only, no dependency:
 * `fastify` belongs to api/.
 *
 * Every failure becomes an ApiError carrying a registry code: the API's own `{code, message}`
 * for a non-2xx answer, VEIL_ERR_API_UNREACHABLE when no answer came at all.
 */

import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { UsageError } from './args.js';

export const DEFAULT_API = 'unix:/run/veil/veil.sock';
const DEFAULT_TIMEOUT_MS = 30_000;

/** A failed API call: the API's code and message (or VEIL_ERR_API_UNREACHABLE), and the HTTP status if one came. */
export class ApiError extends Error {
  override readonly name = 'ApiError';

  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

// ---- the payloads (Docker's vocabulary, see src/api/networks.ts) ----

export interface IpamConfigView {
  Subnet: string;
  Gateway?: string;
  IPRange?: string;
}

export interface NetworkView {
  Name: string;
  Id: string;
  Created: string;
  Scope: string;
  Driver: string;
  IPAM: { Driver?: string; Config: IpamConfigView[] };
  Internal: boolean;
  Attachable: boolean;
  Encrypted: boolean;
  VNI: number;
  Options: Record<string, string>;
  Labels: Record<string, string>;
}

export interface EndpointView {
  Name: string;
  EndpointID: string;
  MacAddress: string;
  /** CIDR form, e.g. 10.0.9.2/24. */
  IPv4Address: string;
  IPv6Address: string;
  Host: string;
  Aliases: string[];
  /** Set when a runtime plugin (CNI) made it. */
  Runtime?: { Kind: 'cni'; ContainerID: string; IfName: string };
}

export interface NetworkDetail extends NetworkView {
  Containers?: Record<string, EndpointView>;
}

export interface CreateNetworkRequest {
  Name: string;
  Driver: 'overlay';
  Attachable?: boolean;
  Internal?: boolean;
  Labels?: Record<string, string>;
  /** Docker's `--opt encrypted` arrives as {"encrypted": ""}. */
  Options?: Record<string, string>;
  IPAM?: { Config: IpamConfigView[] };
}

export interface CreateNetworkResponse {
  Id: string;
  /** "" when there is nothing to warn about. */
  Warning: string;
}

export interface ConnectRequest {
  Container: string;
  Host?: string;
  Sandbox?: { Netns: string } | { Pid: number };
  IfName?: string;
  Runtime?: { Kind: 'cni'; ContainerID: string };
  EndpointConfig?: { IPAMConfig?: { IPv4Address: string }; Aliases?: string[]; MacAddress?: string };
}

export interface ConnectResponse {
  EndpointID: string;
  Name: string;
  Host: string;
  IPv4Address: string;
  MacAddress: string;
  Aliases: string[];
  Warning: string;
}

/** Container, or Runtime and IfName (a CNI DEL). */
export interface DisconnectRequest {
  Container?: string;
  Runtime?: { Kind: 'cni'; ContainerID: string };
  IfName?: string;
  Force?: boolean;
}

export interface HostView {
  Id: string;
  Index: number;
  Address: string;
  OS: string;
  Arch: string;
  Version: string;
  Incarnation: string;
  PublicKey: string;
  /** Set on a Windows host while encrypted networks exist: its traffic on them is not protected. */
  Warning?: string;
}

/** One epoch as GET /networks/{id}/keys shows it (never key bytes). */
export interface KeysEpoch {
  Epoch: number;
  State: 'published' | 'active' | 'retired';
  PublishedAt: string;
  ActivatedAt: string | null;
  RetiredAt: string | null;
  /** Hosts holding a wrapped copy. */
  Members: string[];
  Acked: string[];
  InstalledHere: boolean;
  OutboundHere: boolean;
  Problem: string | null;
}

/** GET /networks/{id}/keys. */
export interface KeysView {
  Network: string;
  Id: string;
  Host: string;
  IntervalSeconds: number;
  NextRotation: string | null;
  ScheduleLeader: boolean;
  Waiting: string | null;
  StoreReachable: boolean;
  Epochs: KeysEpoch[];
}

// ---- where the API is ----

export type ApiAddress =
  { kind: 'unix'; socketPath: string } | { kind: 'http' | 'https'; hostname: string; port: number };

/** `unix:/path` (or Docker's `unix:///path`), `http://host:port`, `https://host:port`. */
export function parseApiAddress(address: string): ApiAddress {
  if (address.startsWith('unix:')) {
    const socketPath = address.slice('unix:'.length).replace(/^\/\/(?=\/)/, '');
    if (!socketPath.startsWith('/'))
      throw new UsageError(`--api ${address}: a unix socket address needs an absolute path, e.g. ${DEFAULT_API}`);
    return { kind: 'unix', socketPath };
  }
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new UsageError(`--api ${address}: expected unix:/path/to.sock, http://host:port or https://host:port`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`--api ${address}: expected unix:/path/to.sock, http://host:port or https://host:port`);
  }
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username) {
    throw new UsageError(`--api ${address}: give only the scheme, host and port`);
  }
  const kind = url.protocol === 'https:' ? 'https' : 'http';
  return {
    kind,
    hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port ? Number(url.port) : kind === 'https' ? 443 : 80,
  };
}

export interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export interface ApiClientOptions {
  /** As given by the user, for messages. */
  address: string;
  tls?: TlsMaterial;
  timeoutMs?: number;
}

export interface ConnectionFlags {
  api?: string;
  'tls-ca'?: string;
  'tls-cert'?: string;
  'tls-key'?: string;
}

/**
 * Flags over environment over default: --api / VEIL_API / unix:/run/veil/veil.sock, and
 * --tls-* / VEIL_TLS_*. The TLS files are read here. TLS flags on a non-https address are a
 * mistake worth saying so; TLS variables in the environment are simply not used there.
 */
export function resolveClientOptions(
  flags: ConnectionFlags,
  env: Readonly<Record<string, string | undefined>>,
): ApiClientOptions {
  const address = flags.api ?? (env.VEIL_API || DEFAULT_API);
  const parsed = parseApiAddress(address);
  const tlsFlags = (['tls-ca', 'tls-cert', 'tls-key'] as const).filter((f) => flags[f] !== undefined);
  if (parsed.kind !== 'https') {
    if (tlsFlags.length > 0)
      throw new UsageError(`--${tlsFlags[0]} applies to https:// API addresses only (the API is ${address})`);
    return { address };
  }
  const files = {
    ca: flags['tls-ca'] ?? (env.VEIL_TLS_CA || undefined),
    cert: flags['tls-cert'] ?? (env.VEIL_TLS_CERT || undefined),
    key: flags['tls-key'] ?? (env.VEIL_TLS_KEY || undefined),
  };
  if ((files.cert === undefined) !== (files.key === undefined))
    throw new UsageError('--tls-cert and --tls-key go together (a client certificate and its key)');
  const read = (flag: string, path: string | undefined) => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new UsageError(`--${flag} ${path}: ${(err as Error).message}`);
    }
  };
  const tls: TlsMaterial = {};
  const ca = read('tls-ca', files.ca);
  const cert = read('tls-cert', files.cert);
  const key = read('tls-key', files.key);
  if (ca) tls.ca = ca;
  if (cert) tls.cert = cert;
  if (key) tls.key = key;
  return { address, tls };
}

// ---- the client ----

export interface ApiResponse {
  status: number;
  /** Parsed JSON, the text of a non-JSON answer, or undefined for an empty one (204). */
  body: unknown;
}

const TLS_FAILURE =
  /^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|UNABLE_TO_|ERR_OSSL_|EPROTO$)/;

export class ApiClient {
  readonly address: string;
  private readonly target: ApiAddress;
  private readonly tls: TlsMaterial;
  private readonly timeoutMs: number;

  constructor(options: ApiClientOptions) {
    this.address = options.address;
    this.target = parseApiAddress(options.address);
    this.tls = options.tls ?? {};
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** One JSON request. Resolves for 2xx; throws ApiError otherwise, or when the API cannot be reached. */
  request(method: string, path: string, body?: unknown): Promise<ApiResponse> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept: 'application/json' };
    // Fastify refuses an empty body sent as JSON, so the header goes only with a body.
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    // agent: false — one connection per request, nothing kept alive to hold the process open.
    const common = { method, path, headers, agent: false, timeout: this.timeoutMs } as const;
    const t = this.target;

    return new Promise<ApiResponse>((resolve, reject) => {
      const onResponse = (res: http.IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => reject(this.unreachable(err)));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const parsed = decodeBody(Buffer.concat(chunks).toString('utf8'), res.headers['content-type']);
          if (status >= 200 && status < 300) resolve({ status, body: parsed });
          else reject(apiErrorFrom(status, parsed));
        });
      };
      const req =
        t.kind === 'unix'
          ? http.request({ ...common, socketPath: t.socketPath }, onResponse)
          : t.kind === 'http'
            ? http.request({ ...common, hostname: t.hostname, port: t.port }, onResponse)
            : https.request({ ...common, hostname: t.hostname, port: t.port, ...this.tls }, onResponse);
      req.on('timeout', () =>
        req.destroy(Object.assign(new Error(`no answer within ${this.timeoutMs / 1000} s`), { code: 'ETIMEDOUT' })),
      );
      req.on('error', (err) => reject(this.unreachable(err)));
      req.end(payload);
    });
  }

  async createNetwork(body: CreateNetworkRequest): Promise<CreateNetworkResponse> {
    return (await this.request('POST', '/networks', body)).body as CreateNetworkResponse;
  }

  async listNetworks(): Promise<NetworkView[]> {
    return (await this.request('GET', '/networks')).body as NetworkView[];
  }

  async inspectNetwork(idOrName: string): Promise<NetworkDetail> {
    return (await this.request('GET', `/networks/${encodeURIComponent(idOrName)}`)).body as NetworkDetail;
  }

  async removeNetwork(idOrName: string): Promise<void> {
    await this.request('DELETE', `/networks/${encodeURIComponent(idOrName)}`);
  }

  async connect(network: string, body: ConnectRequest): Promise<ConnectResponse> {
    return (await this.request('POST', `/networks/${encodeURIComponent(network)}/connect`, body))
      .body as ConnectResponse;
  }

  async disconnect(network: string, body: DisconnectRequest): Promise<void> {
    await this.request('POST', `/networks/${encodeURIComponent(network)}/disconnect`, body);
  }

  async listHosts(): Promise<HostView[]> {
    return (await this.request('GET', '/hosts')).body as HostView[];
  }

  private unreachable(err: Error & { code?: string; reason?: string }): ApiError {
    const code = err.code ?? '';
    const hint =
      code === 'EACCES' || code === 'EPERM'
        ? 'may this user use the socket? (it is usually root-only)'
        : TLS_FAILURE.test(code)
          ? 'check --tls-ca, --tls-cert and --tls-key (or VEIL_TLS_CA, VEIL_TLS_CERT, VEIL_TLS_KEY)'
          : 'is the gateway running?';
    // OpenSSL's messages run over lines with source positions; its reason says it in a phrase.
    const reason = err.reason;
    const what = typeof reason === 'string' && reason !== '' ? reason : err.message.replace(/\s+/g, ' ').trim();
    return new ApiError(
      'VEIL_ERR_API_UNREACHABLE',
      `cannot reach the veil API at ${this.address}: ${what}; ${hint}`,
      undefined,
      { cause: err },
    );
  }
}

function decodeBody(text: string, contentType: string | undefined): unknown {
  if (text === '') return undefined;
  if (contentType?.includes('json')) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

/** The API's `{code, message}`; anything else (a proxy's HTML page, say) is reported as it came. */
function apiErrorFrom(status: number, body: unknown): ApiError {
  if (typeof body === 'object' && body !== null) {
    const { code, message } = body as { code?: unknown; message?: unknown };
    if (typeof code === 'string' && typeof message === 'string') return new ApiError(code, message, status);
  }
  const excerpt = typeof body === 'string' ? `: ${body.slice(0, 200).trim()}` : '';
  return new ApiError('VEIL_ERR_INTERNAL', `unexpected answer from the veil API: HTTP ${status}${excerpt}`, status);
}
