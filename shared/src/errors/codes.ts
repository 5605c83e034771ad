/**
 * Every error code agentcom emits, over HTTP (`{error:{code,message}}`), in socket acks
 * (`{ok:false, code, message}`) and in `connect_error` data. Codes are stable: clients match on
 * them, never on message text.
 */
export const ERROR_CODES = {
  E_VALIDATION: { httpStatus: 400, retryable: false, message: 'The request is not valid' },
  E_PAYLOAD_TOO_LARGE: { httpStatus: 413, retryable: false, message: 'The request is too large' },
  E_UNAUTHORIZED: { httpStatus: 401, retryable: false, message: 'Missing or wrong credentials' },
  E_FORBIDDEN: { httpStatus: 403, retryable: false, message: 'Not allowed' },
  E_NOT_FOUND: { httpStatus: 404, retryable: false, message: 'No such route' },
  E_TASK_NOT_FOUND: { httpStatus: 404, retryable: false, message: 'No such task' },
  /** A finished task retention no longer keeps; `details` (api/tasks.ts `TrimmedTask`): its outcome. */
  E_TASK_TRIMMED: {
    httpStatus: 410,
    retryable: false,
    message: 'The task finished and is no longer kept',
  },
  E_AGENT_NOT_FOUND: { httpStatus: 404, retryable: false, message: 'No such agent' },
  E_AGENT_EXISTS: { httpStatus: 409, retryable: false, message: 'The agent already exists' },
  E_INVALID_STATE: {
    httpStatus: 409,
    retryable: false,
    message: 'Not possible in the current state',
  },
  E_ASSIGNMENT_SUPERSEDED: {
    httpStatus: 409,
    retryable: false,
    message: 'This assignment is no longer current',
  },
  E_PROTOCOL_VERSION: {
    httpStatus: 400,
    retryable: false,
    message: 'Unsupported protocol version',
  },
  E_REPLACED: {
    httpStatus: 409,
    retryable: false,
    message: 'A newer connection of this agent replaced this one',
  },
  E_RATE_LIMITED: { httpStatus: 429, retryable: true, message: 'Too many requests' },
  E_UNAVAILABLE: { httpStatus: 503, retryable: true, message: 'Temporarily unavailable' },
  E_INTERNAL: { httpStatus: 500, retryable: true, message: 'Internal error' },
} as const satisfies Record<string, { httpStatus: number; retryable: boolean; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, value);
}
