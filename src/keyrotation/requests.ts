import { VeilError } from '../errors.js';
import type { Store, WatchEvent } from '../store/types.js';
import { currentEpoch } from './schedule.js';

/*
 * Forced rotation from any host: a request is a store write the leader reacts to, so
 * the API of every host can accept it and the leader need not be reachable.
 *
 *   rotate/<networkId>   { networkId, afterEpoch, requestedAt, by }
 *
 * The request names the epoch the requester saw sealing ("give me an epoch newer than
 * afterEpoch"), not only a time: the leader compares epoch numbers, which every host
 * agrees on, where comparing the requester's clock with the leader's publishedAt would
 * silently drop a request from a host whose clock runs behind. `requestedAt` and `by`
 * are for logs and status. A request stays satisfied once an epoch > afterEpoch is active
 * (the standby, usually: schedule.ts); it is removed with the network.
 */

export interface RotationRequest {
  networkId: string;
  /** The epoch the requester saw sealing (0: none). The leader activates a newer one. */
  afterEpoch: number;
  /** Milliseconds since the Unix epoch, the requester's clock (informational). */
  requestedAt: number;
  /** Who asked: a host id, or "api:<client>". */
  by: string;
}

/** The seam the leader reads requests through; the lead backs it with the Store (storeRotationRequests). */
export interface RotationRequests {
  /** Writes the request; an existing request with a larger afterEpoch wins (it already asks for more). */
  request(request: RotationRequest): Promise<void>;
  get(networkId: string): Promise<RotationRequest | null>;
  /** Calls onChange(networkId) after a request is written or removed. */
  watch(onChange: (networkId: string) => void): Promise<{ cancel(): Promise<void> }>;
}

/**
 * Asks the key-schedule leader for a new epoch of an encrypted network. Works on any host. `seen` is
 * the epoch the requester needs replaced (the sequence budget's SA); without it, the current one in etcd.
 */
export async function requestRotation(
  deps: { store: Pick<Store, 'getNetwork' | 'getEpochs'>; requests: RotationRequests; now?: () => number },
  networkIdOrName: string,
  by: string,
  seen?: number,
): Promise<RotationRequest> {
  const network = await deps.store.getNetwork(networkIdOrName);
  if (!network.encrypted)
    throw new VeilError('VEIL_ERR_NOT_ENCRYPTED', `network ${network.name} has no keys to rotate`);
  const { items } = await deps.store.getEpochs(network.id);
  // Named by epoch, so requests from hosts that saw the same current epoch ask for one rotation.
  const afterEpoch = seen ?? currentEpoch(items)?.epoch ?? 0;
  const request: RotationRequest = { networkId: network.id, afterEpoch, requestedAt: (deps.now ?? Date.now)(), by };
  await deps.requests.request(request);
  return request;
}

/** In-process requests shared by the simulated hosts of a test (or a single-process deployment). */
export class MemoryRotationRequests implements RotationRequests {
  readonly #requests = new Map<string, RotationRequest>();
  readonly #listeners = new Set<(networkId: string) => void>();

  async request(request: RotationRequest): Promise<void> {
    const existing = this.#requests.get(request.networkId);
    if (existing && existing.afterEpoch > request.afterEpoch) return;
    this.#requests.set(request.networkId, { ...request });
    // Asynchronous like a store watch: the writer's await returns first.
    setImmediate(() => {
      for (const f of this.#listeners) f(request.networkId);
    });
  }

  async get(networkId: string): Promise<RotationRequest | null> {
    const r = this.#requests.get(networkId);
    return r ? { ...r } : null;
  }

  async watch(onChange: (networkId: string) => void): Promise<{ cancel(): Promise<void> }> {
    this.#listeners.add(onChange);
    return { cancel: async () => void this.#listeners.delete(onChange) };
  }
}

/**
 * The Store methods this module needs (proposed for store/types.ts; see the key
 * rotation report): requestRotation keeps the larger afterEpoch by a compare on the
 * key's mod revision; the value lives at layout `rotate/<networkId>`.
 */
export interface RotationRequestStore {
  requestRotation(request: RotationRequest): Promise<void>;
  getRotationRequest(networkId: string): Promise<RotationRequest | null>;
}

/** RotationRequests on the Store, once it has the methods above; `prefix` is layout's `keys.rotatePrefix()`. */
export function storeRotationRequests(
  store: Pick<Store, 'watch' | 'listNetworks'> & RotationRequestStore,
  prefix: string,
): RotationRequests {
  return {
    request: (r) => store.requestRotation(r),
    get: (networkId) => store.getRotationRequest(networkId),
    async watch(onChange) {
      const { revision } = await store.listNetworks();
      const each = (key: string): void => {
        if (key.startsWith(prefix)) onChange(key.slice(prefix.length));
      };
      const handle = await store.watch(prefix, revision + 1, {
        onEvents: (events: WatchEvent[]) => events.forEach((e) => each(e.key)),
        onResync: (snapshot) => snapshot.forEach((s) => each(s.key)),
      });
      return { cancel: () => handle.cancel() };
    },
  };
}
