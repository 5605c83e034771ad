import { AppError, describeZodError } from '@agentcom/shared';
import type { ZodType } from 'zod';

/** Parses an untrusted value with a shared schema or throws `E_VALIDATION` naming the fields. */
export function parseOrThrow<T>(schema: ZodType<T>, value: unknown, what: string): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new AppError('E_VALIDATION', `${what}: ${describeZodError(parsed.error)}`);
  }
  return parsed.data;
}
