import { request } from 'node:http';
import { VeilError } from '../errors.js';
import type { EngineContainer, EngineNetwork } from './protocol.js';

/**
 * The Docker daemon's API, for what its plugin calls leave out: Docker never tells a network driver
 * the network's name, labels or attachable flag (docs/docker.md "Names"), so the plugin asks for them.
 */
export interface DockerEngine {
  /** undefined while Docker does not know the network (it stores one only after CreateNetwork answered). */
  network(id: string): Promise<EngineNetwork | undefined>;
  container(id: string): Promise<EngineContainer | undefined>;
}

/** Docker's API over its unix socket. */
export class SocketEngine implements DockerEngine {
  constructor(
    readonly socketPath: string,
    readonly timeoutMs = 2_000,
  ) {}

  network(id: string): Promise<EngineNetwork | undefined> {
    return this.#getJson<EngineNetwork>(`/networks/${id}`, id);
  }

  container(id: string): Promise<EngineContainer | undefined> {
    return this.#getJson<EngineContainer>(`/containers/${id}/json`, id);
  }

  async #getJson<T>(path: string, id: string): Promise<T | undefined> {
    if (!/^[0-9a-f]{1,64}$/.test(id)) throw new VeilError('VEIL_ERR_REQUEST_INVALID', `Docker id "${id}"`);
    const { status, body } = await this.#get(path);
    if (status === 404) return undefined;
    if (status !== 200) throw new VeilError('VEIL_ERR_DOCKER_ENGINE', `GET ${path}: HTTP ${status}`);
    try {
      return JSON.parse(body) as T;
    } catch {
      throw new VeilError('VEIL_ERR_DOCKER_ENGINE', `GET ${path}: not JSON`);
    }
  }

  #get(path: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.socketPath, path, method: 'GET', timeout: this.timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (err) =>
        reject(new VeilError('VEIL_ERR_DOCKER_ENGINE', `${this.socketPath}: ${err.message}`, { cause: err })),
      );
      req.end();
    });
  }
}
