import { ConfigError, loadConfig } from './config';

const base = { AGENTCOM_ADMIN_KEY: 'a-long-enough-admin-key' };

describe('hub config', () => {
  it('fills the documented defaults', () => {
    const config = loadConfig(base);
    expect(config).toMatchObject({
      redisUrl: undefined,
      port: 8080,
      prefix: 'agentcom',
      leaseMs: 60_000,
      heartbeatMs: 5000,
      ackTimeoutMs: 10_000,
      ackCooldownMaxMs: 300_000,
      stalledIntervalMs: 15_000,
      adminKeyGenerated: false,
    });
    expect(config.hubId).toMatch(/^hub-[0-9a-f]{8}$/);
    expect(Object.isFrozen(config)).toBe(true);
  });

  it.each([
    [{ PORT: 'eighty' }, /^PORT: must be a whole number/],
    [{ PORT: '70000' }, /^PORT:/],
    [{ LEASE_MS: '-5' }, /^LEASE_MS:/],
    [{ REDIS_URL: 'http://x' }, /^REDIS_URL: must start with redis:\/\//],
    [{ REDIS_URL: '' }, /^REDIS_URL: set but empty/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL:/],
    [{ ACK_COOLDOWN_MAX_MS: '5m' }, /^ACK_COOLDOWN_MAX_MS: must be a whole number/],
    [{ AGENTCOM_PREFIX: 'has space' }, /^AGENTCOM_PREFIX:/],
    [
      { HEARTBEAT_MS: '40000', LEASE_MS: '60000' },
      /^LEASE_MS: must be at least twice HEARTBEAT_MS/,
    ],
    [{ ACK_TIMEOUT_MS: '60000' }, /^ACK_TIMEOUT_MS: must be below LEASE_MS \(60000\)/],
    [{ ACK_TIMEOUT_MS: '20000', LEASE_MS: '15000' }, /^ACK_TIMEOUT_MS: must be below LEASE_MS/],
  ])('fails fast naming the variable for %j', (env, message) => {
    expect(() => loadConfig({ ...base, ...env })).toThrow(ConfigError);
    expect(() => loadConfig({ ...base, ...env })).toThrow(message);
  });

  it('takes any other empty variable as unset: its default', () => {
    expect(loadConfig({ ...base, PORT: '', LOG_LEVEL: '' })).toMatchObject({
      port: 8080,
      logLevel: 'info',
    });
  });

  it('reads the bound on the doubling ack-timeout cooldown (0: no doubling)', () => {
    expect(loadConfig({ ...base, ACK_COOLDOWN_MAX_MS: '60000' }).ackCooldownMaxMs).toBe(60_000);
    expect(loadConfig({ ...base, ACK_COOLDOWN_MAX_MS: '0' }).ackCooldownMaxMs).toBe(0);
  });

  it('refuses an admin key no HTTP header can carry, without echoing it', () => {
    for (const key of ['a-long-enough-key\n# rotated', 'a-long-enough key', 'a-long-enough-kéy']) {
      let message = '';
      try {
        loadConfig({ AGENTCOM_ADMIN_KEY: key });
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toMatch(/^AGENTCOM_ADMIN_KEY: must be printable ASCII without spaces/);
      expect(message).not.toContain('a-long-enough');
    }
  });

  it('requires an admin key unless AGENTCOM_DEV=1, which generates one', () => {
    expect(() => loadConfig({})).toThrow(/^AGENTCOM_ADMIN_KEY: required/);
    const dev = loadConfig({ AGENTCOM_DEV: '1' });
    expect(dev.adminKeyGenerated).toBe(true);
    expect(dev.adminKey.length).toBeGreaterThanOrEqual(24);
    expect(loadConfig({ AGENTCOM_DEV: '1' }).adminKey).not.toBe(dev.adminKey);
  });
});
