import { readFileSync } from 'node:fs';

/**
 * Whether `pid` is gone. A killed process whose parent died is reparented to PID 1; where PID 1
 * does not reap (some containers) it stays a zombie that `kill(pid, 0)` still reaches, so a
 * zombie (state `Z` in /proc) counts as gone: it runs nothing.
 */
export function isProcessGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/**
 * Resolves once `check()` holds, checking every 20 ms; rejects after `timeoutMs`. For conditions
 * no event announces (another process dying); everything else is awaited through events.
 */
export async function waitUntil(
  check: () => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
