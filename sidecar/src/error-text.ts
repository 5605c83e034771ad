import { inspect } from 'node:util';

/**
 * One line describing a caught value, for logs and failure messages: an Error's message (with
 * its errno code, e.g. `ENOENT (spawn x ENOENT)`), anything else inspected. The one place a
 * caught `unknown` is turned into text.
 */
export function errorText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return typeof code === 'string' ? `${code} (${err.message})` : err.message;
  }
  return typeof err === 'string' ? err : inspect(err, { breakLength: Infinity });
}
