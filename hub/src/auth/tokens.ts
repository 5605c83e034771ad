import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Per-agent tokens: 32 random bytes, shown once when minted. Only their SHA-256 is stored
 * (a fast hash is right for a high-entropy secret; there is nothing to brute-force).
 */
export function mintAgentToken(): string {
  return `agc_${randomBytes(32).toString('base64url')}`;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Constant-time comparison of a presented secret against a stored SHA-256 hex digest. */
export function tokenMatches(presented: string, storedHash: string | undefined): boolean {
  if (!storedHash || storedHash.length !== 64) return false;
  const a = Buffer.from(hashToken(presented), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Constant-time comparison against one fixed secret, of a presented secret of any length (both
 * are hashed first). The expected digest is computed once: the admin key is checked on every
 * API request.
 */
export function secretMatcher(expected: string): (presented: string) => boolean {
  const digest = createHash('sha256').update(expected).digest();
  return (presented) => timingSafeEqual(createHash('sha256').update(presented).digest(), digest);
}
