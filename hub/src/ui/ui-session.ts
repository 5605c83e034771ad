import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { hashToken } from '../auth/tokens';
import type { RedisKeys } from '../redis/keys';

/** Default lifetime of a UI session without use (each use restarts it). */
export const UI_SESSION_TTL_MS = 10 * 60_000;

const SESSION_PATTERN = /^uis_[A-Za-z0-9_-]{43}$/;

/** The Redis key of a session: by the SHA-256 of its token, so a key listing shows no usable session. */
export function uiSessionKey(keys: RedisKeys, token: string): string {
  return keys.uiSession(hashToken(token));
}

/**
 * Short-lived tokens that let a page loaded with the admin key open the `/ui` namespace without
 * the admin key ever being written into the HTML. Stored in Redis, so any replica accepts a
 * session minted by another (a browser reconnects to whichever replica the balancer picks).
 */
export class UiSessions {
  private readonly ttlMs: number;

  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly hubId: string,
    ttlMs: number = UI_SESSION_TTL_MS,
  ) {
    this.ttlMs = ttlMs;
  }

  /** A new session token (32 random bytes), valid for the TTL. */
  async mint(): Promise<string> {
    const token = `uis_${randomBytes(32).toString('base64url')}`;
    await this.redis.set(uiSessionKey(this.keys, token), this.hubId, 'PX', this.ttlMs);
    return token;
  }

  /** True when `token` is a live session; restarts its TTL (one round trip: PEXPIRE). */
  async touch(token: unknown): Promise<boolean> {
    if (typeof token !== 'string' || !SESSION_PATTERN.test(token)) return false;
    return (await this.redis.pexpire(uiSessionKey(this.keys, token), this.ttlMs)) === 1;
  }
}
