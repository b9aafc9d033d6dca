import { VeilError, type ErrorCode } from '../errors.js';

/** The registry codes the store raises (a subset of src/errors.ts). */
export type StoreErrorCode = Extract<
  ErrorCode,
  | 'VEIL_ERR_REQUEST_INVALID'
  | 'VEIL_ERR_NOT_FOUND'
  | 'VEIL_ERR_NETWORK_NAME_TAKEN'
  | 'VEIL_ERR_VNI_TAKEN'
  | 'VEIL_ERR_SUBNET_OVERLAP'
  | 'VEIL_ERR_NETWORK_HAS_ENDPOINTS'
  | 'VEIL_ERR_NETWORK_EXISTS'
  | 'VEIL_ERR_ENDPOINT_EXISTS'
  | 'VEIL_ERR_IP_TAKEN'
  | 'VEIL_ERR_IPAM_EXHAUSTED'
  | 'VEIL_ERR_INDEX_EXHAUSTED'
  | 'VEIL_ERR_NOT_LEADER'
  | 'VEIL_ERR_STORE_CONFLICT'
  | 'VEIL_ERR_STORE_UNAVAILABLE'
  | 'VEIL_ERR_HOST_ID_IN_USE'
>;

/** A store failure: a registry code (and its HTTP status) the API can pass on as it is. */
export class StoreError extends VeilError {
  override readonly name = 'StoreError';

  constructor(
    override readonly code: StoreErrorCode,
    detail?: string,
    options?: { cause?: unknown },
  ) {
    super(code, detail, options);
  }
}

export function isStoreError(err: unknown, code?: StoreErrorCode): err is StoreError {
  return err instanceof StoreError && (code === undefined || err.code === code);
}
