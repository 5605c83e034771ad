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
 * Constant-time comparison against one fixed secret, of a presented secret of any length. The
 * presented bytes are copied into a buffer of the secret's length (cut or zero-padded) and
 * compared in constant time, and the lengths are compared apart: the time depends on the
 * presented value's length, never on the secret. The admin key is checked on every API request;
 * hashing the presented value instead (as before) was 2% of a busy replica's CPU profile: a
 * SHA-256 through `createHash` costs 4.2 µs in a loop on the reference machine, this 0.85 µs
 * (issue 7, sixth pass).
 */
export function secretMatcher(expected: string): (presented: string) => boolean {
  const secret = Buffer.from(expected, 'utf8');
  const scratch = Buffer.alloc(secret.length);
  return (presented) => {
    scratch.fill(0);
    scratch.write(presented, 'utf8');
    const equal = timingSafeEqual(scratch, secret);
    return Buffer.byteLength(presented, 'utf8') === secret.length && equal;
  };
}
