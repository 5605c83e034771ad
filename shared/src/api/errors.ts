import type { ZodError } from 'zod';
import type { ErrorCode } from '../errors/codes';

/** The body of every HTTP error response. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: unknown };
}

/** One line naming each failing field: `payload: must be plain JSON; attempts: too big`. */
export function describeZodError(error: ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((issue) => {
      const path = issue.path.map(String).join('.');
      return path ? `${path}: ${issue.message}` : issue.message;
    })
    .join('; ');
}
