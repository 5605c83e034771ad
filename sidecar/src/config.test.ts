import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isConfigError } from './config-error';
import { loadRunConfig, type RunFlags } from './config';
import { makeTempDir } from './test-support/temp-dir';

const PATH = process.env.PATH ?? '';
const BASE_ENV = { PATH, HOME: '/home/someone', AGENTCOM_TOKEN: 'secret-token' };
const BASE_FLAGS: RunFlags = {
  hub: 'http://hub-1:8080',
  agent: 'agent-1',
  queue: ['default'],
  exec: `${process.execPath} handler.js`,
};

/** The option named by the ConfigError that loading throws. */
function failingOption(flags: RunFlags, env: Record<string, string> = BASE_ENV): string {
  try {
    loadRunConfig(flags, env);
  } catch (err) {
    if (isConfigError(err)) return err.message;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('loadRunConfig', () => {
  describe('with valid flags', () => {
    it('fills the defaults and freezes the result', () => {
      const config = loadRunConfig(BASE_FLAGS, BASE_ENV);
      expect(config).toMatchObject({
        hubUrls: ['http://hub-1:8080'],
        agentId: 'agent-1',
        token: 'secret-token',
        queues: ['default'],
        runner: { kind: 'exec', argv: [process.execPath, 'handler.js'] },
        stateDir: '/home/someone/.local/state/agentcom/agent-1',
        heartbeatMs: 5000,
        drainGraceMs: 30000,
        killGraceMs: 5000,
        ackTimeoutMs: 10000,
        failoverAttempts: 3,
        logLevel: 'info',
      });
      expect(Object.isFrozen(config)).toBe(true);
      expect(Object.isFrozen(config.queues)).toBe(true);
      expect(Object.isFrozen(config.runner.argv)).toBe(true);
    });

    it('keeps the token out of the environment handed to tasks', () => {
      const config = loadRunConfig(BASE_FLAGS, {
        ...BASE_ENV,
        AGENTCOM_TOKEN_FILE: '',
        OTHER: 'x',
      });
      expect(config.childEnv).toEqual({ PATH, HOME: '/home/someone', OTHER: 'x' });
    });

    it('splits comma-separated hubs and queues, and repeated --queue flags', () => {
      const config = loadRunConfig(
        { ...BASE_FLAGS, hub: 'http://a:1, ws://b:2', queue: ['q1,q2', 'q3', 'q1'] },
        BASE_ENV,
      );
      expect(config.hubUrls).toEqual(['http://a:1', 'ws://b:2']);
      expect(config.queues).toEqual(['q1', 'q2', 'q3']);
    });

    it('reads every setting from the environment when no flag is given', () => {
      const config = loadRunConfig(
        {},
        {
          ...BASE_ENV,
          AGENTCOM_HUB: 'https://hub.example',
          AGENTCOM_AGENT: 'from-env',
          AGENTCOM_QUEUES: 'a,b',
          AGENTCOM_EXEC: `${process.execPath} -e "console.log(1)"`,
          AGENTCOM_STATE_DIR: '/var/lib/agentcom',
          AGENTCOM_HEARTBEAT_MS: '250',
          AGENTCOM_DRAIN_GRACE_MS: '0',
          AGENTCOM_KILL_GRACE_MS: '100',
          AGENTCOM_ACK_TIMEOUT_MS: '2000',
          AGENTCOM_FAILOVER_ATTEMPTS: '5',
          LOG_LEVEL: 'debug',
        },
      );
      expect(config).toMatchObject({
        hubUrls: ['https://hub.example'],
        agentId: 'from-env',
        queues: ['a', 'b'],
        runner: { argv: [process.execPath, '-e', 'console.log(1)'] },
        stateDir: '/var/lib/agentcom',
        heartbeatMs: 250,
        drainGraceMs: 0,
        killGraceMs: 100,
        ackTimeoutMs: 2000,
        failoverAttempts: 5,
        logLevel: 'debug',
      });
    });

    it('prefers flags to the environment', () => {
      const config = loadRunConfig(
        { ...BASE_FLAGS, heartbeatMs: '1000' },
        { ...BASE_ENV, AGENTCOM_AGENT: 'ignored', AGENTCOM_HEARTBEAT_MS: '9999' },
      );
      expect(config.agentId).toBe('agent-1');
      expect(config.heartbeatMs).toBe(1000);
    });

    it('puts the default state dir under XDG_STATE_HOME when set', () => {
      const config = loadRunConfig(BASE_FLAGS, { ...BASE_ENV, XDG_STATE_HOME: '/xdg' });
      expect(config.stateDir).toBe('/xdg/agentcom/agent-1');
    });

    it('finds the command on PATH', () => {
      const config = loadRunConfig({ ...BASE_FLAGS, exec: 'node --version' }, BASE_ENV);
      expect(config.runner.argv).toEqual(['node', '--version']);
    });
  });

  describe('with a token file', () => {
    it('reads and trims it, ahead of AGENTCOM_TOKEN', async () => {
      const { dir, cleanup } = await makeTempDir();
      try {
        const file = join(dir, 'token');
        await writeFile(file, '  file-token\n');
        expect(loadRunConfig({ ...BASE_FLAGS, tokenFile: file }, BASE_ENV).token).toBe(
          'file-token',
        );
        const fromEnv = loadRunConfig(BASE_FLAGS, { ...BASE_ENV, AGENTCOM_TOKEN_FILE: file });
        expect(fromEnv.token).toBe('file-token');
      } finally {
        await cleanup();
      }
    });

    it('names --token-file when the file is missing or empty', async () => {
      const { dir, cleanup } = await makeTempDir();
      try {
        expect(failingOption({ ...BASE_FLAGS, tokenFile: join(dir, 'nope') })).toMatch(
          /^--token-file \(AGENTCOM_TOKEN_FILE\): cannot read .*ENOENT/,
        );
        await writeFile(join(dir, 'empty'), '\n');
        expect(failingOption({ ...BASE_FLAGS, tokenFile: join(dir, 'empty') })).toMatch(
          /^--token-file \(AGENTCOM_TOKEN_FILE\): .* is empty/,
        );
      } finally {
        await cleanup();
      }
    });
  });

  describe('with a bad or missing option', () => {
    it.each<[string, RunFlags, Record<string, string>, RegExp]>([
      [
        'no hub',
        { ...BASE_FLAGS, hub: undefined },
        BASE_ENV,
        /^--hub \(AGENTCOM_HUB\): is required$/,
      ],
      ['a hub that is no URL', { ...BASE_FLAGS, hub: 'hub-1:8080' }, BASE_ENV, /^--hub .*URL/],
      [
        'a second hub that is no URL',
        { ...BASE_FLAGS, hub: 'http://a,ftp://b' },
        BASE_ENV,
        /^--hub .*\(item 1\)/,
      ],
      [
        'no agent',
        { ...BASE_FLAGS, agent: undefined },
        BASE_ENV,
        /^--agent \(AGENTCOM_AGENT\): is required$/,
      ],
      ['an agent id with a colon', { ...BASE_FLAGS, agent: 'a:b' }, BASE_ENV, /^--agent /],
      [
        'no token',
        BASE_FLAGS,
        { PATH },
        /^--token-file \(AGENTCOM_TOKEN_FILE or AGENTCOM_TOKEN\): is required$/,
      ],
      [
        'no queue',
        { ...BASE_FLAGS, queue: [] },
        BASE_ENV,
        /^--queue \(AGENTCOM_QUEUES\): is required$/,
      ],
      [
        'a bad queue name',
        { ...BASE_FLAGS, queue: ['ok', 'not ok'] },
        BASE_ENV,
        /^--queue .*\(item 1\)/,
      ],
      [
        'no exec',
        { ...BASE_FLAGS, exec: undefined },
        BASE_ENV,
        /^--exec \(AGENTCOM_EXEC\): is required$/,
      ],
      [
        'an unterminated quote in exec',
        { ...BASE_FLAGS, exec: `node -e 'x` },
        BASE_ENV,
        /^--exec .*unterminated/,
      ],
      [
        'a pipe in exec',
        { ...BASE_FLAGS, exec: 'node x | jq' },
        BASE_ENV,
        /^--exec .*needs a shell/,
      ],
      [
        'an unknown command',
        { ...BASE_FLAGS, exec: 'no-such-command-xyz' },
        BASE_ENV,
        /^--exec .*"no-such-command-xyz" was not found on PATH/,
      ],
      [
        'a missing command path',
        { ...BASE_FLAGS, exec: '/no/such/file' },
        BASE_ENV,
        /^--exec .*is not an executable file/,
      ],
      [
        'a heartbeat that is not a number',
        { ...BASE_FLAGS, heartbeatMs: 'fast' },
        BASE_ENV,
        /^--heartbeat-ms \(AGENTCOM_HEARTBEAT_MS\): must be a whole number$/,
      ],
      [
        'a heartbeat too small',
        { ...BASE_FLAGS, heartbeatMs: '5' },
        BASE_ENV,
        /^--heartbeat-ms .*50/,
      ],
      [
        'a bad drain grace from env',
        BASE_FLAGS,
        { ...BASE_ENV, AGENTCOM_DRAIN_GRACE_MS: '-1' },
        /^--drain-grace-ms \(AGENTCOM_DRAIN_GRACE_MS\)/,
      ],
      ['a bad kill grace', { ...BASE_FLAGS, killGraceMs: '1.5' }, BASE_ENV, /^--kill-grace-ms /],
      ['a bad ack timeout', { ...BASE_FLAGS, ackTimeoutMs: '1' }, BASE_ENV, /^--ack-timeout-ms /],
      [
        'zero failover attempts',
        { ...BASE_FLAGS, failoverAttempts: '0' },
        BASE_ENV,
        /^--failover-attempts /,
      ],
      [
        'an unknown log level',
        { ...BASE_FLAGS, logLevel: 'loud' },
        BASE_ENV,
        /^--log-level \(LOG_LEVEL\): /,
      ],
    ])('names the option for %s', (_case, flags, env, message) => {
      expect(failingOption(flags, env)).toMatch(message);
    });

    it('refuses an --exec file that is not executable', async () => {
      const { dir, cleanup } = await makeTempDir();
      try {
        const script = join(dir, 'handler.sh');
        await writeFile(script, '#!/bin/sh\n');
        await chmod(script, 0o644);
        expect(failingOption({ ...BASE_FLAGS, exec: script })).toMatch(
          /^--exec .*not an executable/,
        );
      } finally {
        await cleanup();
      }
    });

    it('never echoes the token in an error', () => {
      expect(
        failingOption(BASE_FLAGS, { ...BASE_ENV, AGENTCOM_TOKEN: 'x'.repeat(600) }),
      ).not.toContain('xxxx');
    });
  });
});
