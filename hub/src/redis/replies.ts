/** A hash as Redis returns it flat (`HGETALL` in Lua, stream entry fields): `[name, value, ...]`. */
export function hashFromFlat(flat: readonly string[]): Record<string, string> {
  const hash: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) hash[flat[i] ?? ''] = flat[i + 1] ?? '';
  return hash;
}
