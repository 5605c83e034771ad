import { createHmac, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { RedisKeys } from '../redis/keys';

/** Default lifetime of a UI session without use (each use restarts it). */
export const UI_SESSION_TTL_MS = 10 * 60_000;
/** Longest a UI session lives from its minting, however often it is used: then the page reloads. */
export const UI_SESSION_MAX_LIFETIME_MS = 12 * 60 * 60_000;

const SESSION_PATTERN = /^uis_[A-Za-z0-9_-]{43}$/;
/**
 * Where a page answered to `HEAD` names its session: as long as a real one (so the page is as
 * long as its `GET`), and never one (`touch` refuses it: `.` is not in a token).
 */
export const NO_SESSION = `uis_${'.'.repeat(43)}`;

/**
 * The Redis key of a session: by an HMAC-SHA-256 of its token keyed with the admin key, so a key
 * listing shows no usable session, and a replica started with another admin key finds none of
 * the sessions minted under the old one (rotating the key ends every page session at once).
 */
export function uiSessionKey(keys: RedisKeys, adminKey: string, token: string): string {
  return keys.uiSession(createHmac('sha256', adminKey).update(token, 'utf8').digest('hex'));
}

/** What a session's key holds. */
interface StoredSession {
  /** The replica that minted it. */
  hub: string;
  /** When it was minted (ms): it is refused {@link UI_SESSION_MAX_LIFETIME_MS} later. */
  mintedAt: number;
}

export interface UiSessionsOptions {
  redis: Redis;
  keys: RedisKeys;
  hubId: string;
  /** Keys the session keys' HMAC (see {@link uiSessionKey}). */
  adminKey: string;
  /** Lifetime without use (ms). Default {@link UI_SESSION_TTL_MS}. */
  ttlMs?: number;
  /** Lifetime from minting, used or not (ms). Default {@link UI_SESSION_MAX_LIFETIME_MS}. */
  maxLifetimeMs?: number;
  now?: () => number;
}

/**
 * Short-lived tokens that let a page loaded with the admin key open the `/ui` namespace without
 * the admin key ever being written into the HTML. Stored in Redis, so any replica accepts a
 * session minted by another (a browser reconnects to whichever replica the balancer picks). A
 * session ends after {@link UI_SESSION_TTL_MS} without use, {@link UI_SESSION_MAX_LIFETIME_MS}
 * after it was minted however much it is used, and when the admin key changes.
 */
export class UiSessions {
  private readonly ttlMs: number;
  private readonly maxLifetimeMs: number;
  private readonly now: () => number;

  constructor(private readonly options: UiSessionsOptions) {
    this.ttlMs = options.ttlMs ?? UI_SESSION_TTL_MS;
    this.maxLifetimeMs = options.maxLifetimeMs ?? UI_SESSION_MAX_LIFETIME_MS;
    this.now = options.now ?? Date.now;
  }

  /** A new session token (32 random bytes), valid for the TTL. */
  async mint(): Promise<string> {
    const token = `uis_${randomBytes(32).toString('base64url')}`;
    const stored: StoredSession = { hub: this.options.hubId, mintedAt: this.now() };
    await this.options.redis.set(this.key(token), JSON.stringify(stored), 'PX', this.ttlMs);
    return token;
  }

  /**
   * True when `token` is a live session; restarts its TTL. One round trip (GETEX), as the plain
   * PEXPIRE it replaces; a session past its lifetime is deleted (one more, once).
   */
  async touch(token: unknown): Promise<boolean> {
    if (typeof token !== 'string' || !SESSION_PATTERN.test(token)) return false;
    const key = this.key(token);
    const value = await this.options.redis.getex(key, 'PX', this.ttlMs);
    if (value === null) return false;
    const mintedAt = mintedAtOf(value);
    if (mintedAt !== undefined && this.now() - mintedAt < this.maxLifetimeMs) return true;
    await this.options.redis.del(key);
    return false;
  }

  private key(token: string): string {
    return uiSessionKey(this.options.keys, this.options.adminKey, token);
  }
}

/** The minting time a stored session names; undefined for any other value (never accepted). */
function mintedAtOf(value: string): number | undefined {
  try {
    const { mintedAt } = JSON.parse(value) as Partial<StoredSession>;
    return typeof mintedAt === 'number' && Number.isFinite(mintedAt) ? mintedAt : undefined;
  } catch {
    return undefined;
  }
}
