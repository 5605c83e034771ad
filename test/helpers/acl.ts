/**
 * ACL key patterns for "every key but `key`" (Redis globs have no negation): every string that
 * leaves `key` at some position, every proper prefix of it, and every extension of it. With
 * `ACL SETUSER <user> resetkeys ...patterns`, Redis refuses `key` to that user (NOPERM): a script
 * that declares it is refused before it runs, one that builds its name (from ARGV) fails at the
 * command that uses it, after what the script wrote before.
 */
export function everyKeyBut(key: string): string[] {
  const glob = (s: string): string => s.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
  const patterns: string[] = [`~${glob(key)}?*`];
  for (let i = 0; i < key.length; i++) {
    const prefix = glob(key.slice(0, i));
    patterns.push(`~${prefix}[^${glob(key[i] ?? '')}]*`);
    if (i > 0) patterns.push(`~${prefix}`);
  }
  return patterns;
}
