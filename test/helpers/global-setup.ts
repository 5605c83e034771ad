import { execFileSync } from 'node:child_process';

/** Fails fast, with the fix, when redis-server is missing (every integration test needs it). */
export default function globalSetup(): void {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error(
      'redis-server is not on PATH: install it (apt-get install redis-server) or run `make test`, which does.',
    );
  }
}
