/**
 * The one registry of control-plane errors: a code (VEIL_ERR_<AREA>_<WHAT>), an
 * HTTP status, and a message template. The data plane never throws; it counts
 * drop reasons instead (vxlan/drops.ts). Messages never carry key material.
 */
export const ERRORS = {
  VEIL_ERR_CONFIG_INVALID: { status: 400, message: 'invalid configuration' },
  VEIL_ERR_CONFIG_INSECURE: { status: 400, message: 'configuration file holds secrets but is readable by others' },
  VEIL_ERR_REQUEST_INVALID: { status: 400, message: 'invalid request' },
  VEIL_ERR_NOT_FOUND: { status: 404, message: 'not found' },
  VEIL_ERR_INTERNAL: { status: 500, message: 'internal error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

export class VeilError extends Error {
  override readonly name = 'VeilError';
  readonly status: number;

  constructor(readonly code: ErrorCode, detail?: string) {
    super(detail ? `${ERRORS[code].message}: ${detail}` : ERRORS[code].message);
    this.status = ERRORS[code].status;
  }
}
