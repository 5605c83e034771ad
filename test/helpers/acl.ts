import type { Redis } from 'ioredis';

/** The user the test's own connection runs as, once {@link becomeAclAdmin}: the ACL spares it. */
const ACL_ADMIN = 'tester';

/** `s` matched literally in an ACL key pattern. */
const glob = (s: string): string => s.replace(/[*?[\]\\]/g, (c) => `\\${c}`);

/**
 * Makes `connection` (the `default` user's, as the hub's) a user of the test's own that every key
 * and command stays open to: the ACL a test sets restricts the hub's user (`default`), and the
 * test still reads what the hub wrote, and lifts the restriction, through this connection.
 */
export async function becomeAclAdmin(connection: Redis): Promise<void> {
  await connection.call('ACL', 'SETUSER', ACL_ADMIN, 'on', 'nopass', '~*', '&*', '+@all');
  await connection.call('AUTH', ACL_ADMIN, 'any');
}

/** Sets the keys the hub's user (`default`) may use to `patterns`, in place of what it had. */
const setHubKeys = (admin: Redis, patterns: string[]): Promise<unknown> =>
  admin.call('ACL', 'SETUSER', 'default', 'resetkeys', ...patterns);

/** Redis refuses `key` to the hub's user (NOPERM) until {@link allowHubEveryKey}. */
export function refuseKeyToHub(admin: Redis, key: string): Promise<unknown> {
  return setHubKeys(admin, everyKeyBut(key));
}

/** Redis lets the hub's user read `key` but not write it until {@link allowHubEveryKey}. */
export function refuseHubWritesTo(admin: Redis, key: string): Promise<unknown> {
  return setHubKeys(admin, [...everyKeyBut(key), `%R~${glob(key)}`]);
}

/** Every key open to the hub's user again. */
export function allowHubEveryKey(admin: Redis): Promise<unknown> {
  return setHubKeys(admin, ['~*']);
}

/**
 * ACL key patterns for "every key but `key`" (Redis globs have no negation): every string that
 * leaves `key` at some position, every proper prefix of it, and every extension of it. With
 * `ACL SETUSER <user> resetkeys ...patterns`, Redis refuses `key` to that user (NOPERM): a script
 * that declares it is refused before it runs, one that builds its name (from ARGV) fails at the
 * command that uses it, after what the script wrote before.
 */
export function everyKeyBut(key: string): string[] {
  const patterns: string[] = [`~${glob(key)}?*`];
  for (let i = 0; i < key.length; i++) {
    const prefix = glob(key.slice(0, i));
    patterns.push(`~${prefix}[^${glob(key[i] ?? '')}]*`);
    if (i > 0) patterns.push(`~${prefix}`);
  }
  return patterns;
}
