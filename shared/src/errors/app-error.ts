import { ERROR_CODES, type ErrorCode } from './codes';

/** An error with a stable code from {@link ERROR_CODES}; the one error type both sides throw. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details: unknown;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown; details?: unknown }) {
    super(message ?? ERROR_CODES[code].message, { cause: options?.cause });
    this.name = 'AppError';
    this.code = code;
    this.details = options?.details;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].httpStatus;
  }
}

export function isAppError(value: unknown): value is AppError {
  return value instanceof AppError;
}
