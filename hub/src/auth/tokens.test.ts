import { hashToken, secretMatcher, tokenMatches } from './tokens';

describe('secretMatcher', () => {
  const key = 'admin-key-0123456789-ünï';
  const matches = secretMatcher(key);

  it('accepts the secret itself, again and again', () => {
    expect(matches(key)).toBe(true);
    expect(matches(`${key}`)).toBe(true);
  });

  it('refuses every other value: shorter, longer, padded, same length, empty', () => {
    expect(matches(key.slice(0, -1))).toBe(false);
    expect(matches(`${key}x`)).toBe(false);
    expect(matches(`${key}\u0000`)).toBe(false);
    expect(matches(`${key.slice(0, -1)}\u0000`)).toBe(false);
    expect(matches(`${key.slice(0, -1)}i`)).toBe(false);
    expect(matches('X'.repeat(Buffer.byteLength(key)))).toBe(false);
    expect(matches('')).toBe(false);
    // a refusal leaves nothing behind that would let the next check pass
    expect(matches(key)).toBe(true);
    expect(matches(key.slice(0, 5))).toBe(false);
  });
});

describe('tokenMatches', () => {
  it('compares a presented token with a stored SHA-256 digest', () => {
    const stored = hashToken('agc_token');
    expect(tokenMatches('agc_token', stored)).toBe(true);
    expect(tokenMatches('agc_tokem', stored)).toBe(false);
    expect(tokenMatches('agc_token', undefined)).toBe(false);
    expect(tokenMatches('agc_token', 'abc')).toBe(false);
  });
});
