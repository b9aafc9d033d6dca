/**
 * The one registry of errors: every code veil can raise (VEIL_ERR_<AREA>_<WHAT>, the C addon's
 * included), its HTTP status and its message. The data plane's hot path never throws; it counts
 * drop reasons instead (vxlan/wire/drops.ts). Messages never carry key material. A test scans
 * src/ and native/ for codes missing here (docs/api.md "Errors").
 */
export const ERRORS = {
  VEIL_ERR_CONFIG_INVALID: { status: 400, message: 'invalid configuration' },
  VEIL_ERR_CONFIG_INSECURE: { status: 400, message: 'configuration file holds secrets but is readable by others' },
  VEIL_ERR_REQUEST_INVALID: { status: 400, message: 'invalid request' },
  VEIL_ERR_NOT_FOUND: { status: 404, message: 'not found' },
  VEIL_ERR_NETWORK_NAME_TAKEN: { status: 409, message: 'network name already in use' },
  VEIL_ERR_NETWORK_EXISTS: { status: 409, message: 'network id already exists' },
  VEIL_ERR_VNI_TAKEN: { status: 409, message: 'VNI already in use' },
  VEIL_ERR_SUBNET_OVERLAP: { status: 409, message: "subnet overlaps another network's subnet" },
  VEIL_ERR_NETWORK_HAS_ENDPOINTS: { status: 409, message: 'network has active endpoints' },
  VEIL_ERR_ENDPOINT_EXISTS: { status: 409, message: 'endpoint already exists' },
  VEIL_ERR_IP_TAKEN: { status: 409, message: 'IP address already in use' },
  VEIL_ERR_IPAM_EXHAUSTED: { status: 409, message: 'no free IP address in the network' },
  VEIL_ERR_INDEX_EXHAUSTED: { status: 409, message: 'no free host, network index or VNI' },
  VEIL_ERR_NOT_LEADER: { status: 503, message: 'not the key-schedule leader' },
  VEIL_ERR_STORE_CONFLICT: { status: 503, message: 'store kept changing under a transaction; retry' },
  VEIL_ERR_STORE_UNAVAILABLE: { status: 503, message: 'etcd unavailable' },
  VEIL_ERR_STRICT_UNENCRYPTED_HOST: {
    status: 409,
    message: 'strict network: a member host cannot encrypt overlay traffic',
  },
  VEIL_ERR_ENDPOINT_NOT_FOUND: { status: 404, message: 'no such endpoint on the network' },
  VEIL_ERR_HOST_NOT_FOUND: { status: 404, message: 'no such host' },
  VEIL_ERR_ATTACH_FAILED: { status: 422, message: 'could not attach the container' },
  VEIL_ERR_DOCKER_NETWORK_MISMATCH: {
    status: 409,
    message: 'the Docker network disagrees with the veil network of that name',
  },
  VEIL_ERR_DOCKER_ENGINE: { status: 502, message: 'the Docker daemon did not answer as expected' },
  VEIL_ERR_DOCKER_TIMEOUT: { status: 504, message: 'the plugin call did not finish in time' },
  VEIL_ERR_NOT_ENCRYPTED: { status: 409, message: 'network is not encrypted' },
  VEIL_ERR_KEY_UNAVAILABLE: { status: 503, message: 'key material for this host is not available' },
  VEIL_ERR_API_TLS_REQUIRED: {
    status: 400,
    message: 'a non-loopback API listen address requires TLS with client certificates',
  },
  VEIL_ERR_UNAUTHENTICATED: { status: 401, message: 'this request needs a client certificate issued by the veil CA' },
  VEIL_ERR_CA_EXISTS: { status: 409, message: 'a CA already exists in that directory' },
  VEIL_ERR_CA_MISSING: { status: 404, message: 'no CA in that directory (run veil ca init)' },
  VEIL_ERR_API_UNREACHABLE: { status: 503, message: 'cannot reach the veil API' },
  VEIL_ERR_HOST_ID_IN_USE: { status: 409, message: 'host id is registered by a live host' },
  VEIL_ERR_DATA_DIR_IN_USE: { status: 409, message: 'the data directory is in use by another gateway' },
  VEIL_ERR_PLUMBING_COMMAND: { status: 500, message: 'plumbing command failed' },
  VEIL_ERR_SA_SPI_IN_USE: { status: 500, message: 'the SPI is in use by another peer, network or epoch' },
  VEIL_ERR_SA_TOO_MANY_EPOCHS: { status: 500, message: 'the (peer, network) pair already has three live epochs' },
  VEIL_ERR_SA_EPOCH_TOO_OLD: {
    status: 500,
    message: 'the epoch is more than two behind the newest one installed in that network',
  },
  VEIL_ERR_SA_KEY_REUSED: {
    status: 500,
    message: 'the key is in use under another SPI, ESN setting, epoch or network',
  },
  VEIL_ERR_NATIVE_UNAVAILABLE: { status: 500, message: 'the native data path is not available' },
  VEIL_ERR_NATIVE_NOT_RUNNING: { status: 503, message: 'the native data path is not running' },
  VEIL_ERR_NATIVE_CLOSED: { status: 503, message: 'the native data path is closed' },
  VEIL_ERR_NATIVE_UNKNOWN_PEER: { status: 500, message: 'an SA names a peer the data path does not know' },
  VEIL_ERR_NATIVE_ARGS: { status: 500, message: 'invalid arguments to the native data path' },
  VEIL_ERR_NATIVE_NOMEM: { status: 503, message: 'the native data path is out of memory' },
  VEIL_ERR_NATIVE_IO: { status: 500, message: 'the native data path could not set up a socket or thread' },
  VEIL_ERR_NATIVE_CRYPTO: { status: 500, message: 'an OpenSSL operation of the native data path failed' },
  VEIL_ERR_INTERNAL: { status: 500, message: 'internal error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

export class VeilError extends Error {
  override readonly name: string = 'VeilError';
  readonly status: number;

  constructor(
    readonly code: ErrorCode,
    detail?: string,
    options?: { cause?: unknown },
  ) {
    super(detail ? `${ERRORS[code].message}: ${detail}` : ERRORS[code].message, options);
    this.status = ERRORS[code].status;
  }
}
