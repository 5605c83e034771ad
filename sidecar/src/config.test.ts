import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isConfigError } from './config-error';
import { loadRunConfig, resolveLocalTarget, type RunFlags } from './config';
import { FIXTURE_TOKEN, useConfigFileFixture } from './test-support/config-file-fixture';
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
        handshakeTimeoutMs: 20000,
        logLevel: 'info',
      });
      expect(Object.isFrozen(config)).toBe(true);
      expect(Object.isFrozen(config.queues)).toBe(true);
      expect(Object.isFrozen(config.runner.argv)).toBe(true);
      expect(config.labels).toEqual({});
      expect(Object.isFrozen(config.labels)).toBe(true);
    });

    it('keeps the credentials out of the environment handed to tasks', () => {
      const config = loadRunConfig(BASE_FLAGS, {
        ...BASE_ENV,
        AGENTCOM_TOKEN_FILE: '',
        AGENTCOM_ADMIN_KEY: 'admin-key',
        AGENTCOM_ADMIN_KEY_FILE: '/etc/agentcom/admin-key',
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

    it('takes labels from repeated and comma-separated --label flags, split at the first "="', () => {
      const config = loadRunConfig(
        { ...BASE_FLAGS, label: ['gpu=a100', ' zone = eu-1 ,url=http://x/?a=b', 'empty='] },
        BASE_ENV,
      );
      expect(config.labels).toEqual({
        gpu: 'a100',
        zone: 'eu-1',
        url: 'http://x/?a=b',
        empty: '',
      });
      expect(Object.isFrozen(config.labels)).toBe(true);
    });

    it('reads labels from AGENTCOM_LABELS, and prefers --label to it as a whole', () => {
      const env = { ...BASE_ENV, AGENTCOM_LABELS: 'gpu=a100, zone=eu-1' };
      expect(loadRunConfig(BASE_FLAGS, env).labels).toEqual({ gpu: 'a100', zone: 'eu-1' });
      expect(loadRunConfig({ ...BASE_FLAGS, label: ['gpu=h100'] }, env).labels).toEqual({
        gpu: 'h100',
      });
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
          AGENTCOM_HANDSHAKE_TIMEOUT_MS: '3000',
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
        handshakeTimeoutMs: 3000,
        logLevel: 'debug',
      });
    });

    it('prefers flags to the environment', () => {
      const config = loadRunConfig(
        { ...BASE_FLAGS, heartbeatMs: '1000', handshakeTimeoutMs: '500' },
        {
          ...BASE_ENV,
          AGENTCOM_AGENT: 'ignored',
          AGENTCOM_HEARTBEAT_MS: '9999',
          AGENTCOM_HANDSHAKE_TIMEOUT_MS: '9999',
        },
      );
      expect(config.agentId).toBe('agent-1');
      expect(config.heartbeatMs).toBe(1000);
      expect(config.handshakeTimeoutMs).toBe(500);
    });

    it('makes a relative state dir absolute (the wake command and its agent may run elsewhere)', () => {
      expect(loadRunConfig({ ...BASE_FLAGS, stateDir: 'rel-state' }, BASE_ENV).stateDir).toBe(
        join(process.cwd(), 'rel-state'),
      );
      expect(
        loadRunConfig(BASE_FLAGS, { ...BASE_ENV, AGENTCOM_STATE_DIR: './s/env' }).stateDir,
      ).toBe(join(process.cwd(), 's', 'env'));
      expect(resolveLocalTarget({ stateDir: 'rel-state' }, {})).toEqual({
        stateDir: join(process.cwd(), 'rel-state'),
        socketPath: join(process.cwd(), 'rel-state', 'sidecar.sock'),
      });
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
        await writeFile(file, '  file-token\n', { mode: 0o600 });
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
        await writeFile(join(dir, 'empty'), '\n', { mode: 0o600 });
        expect(failingOption({ ...BASE_FLAGS, tokenFile: join(dir, 'empty') })).toMatch(
          /^--token-file \(AGENTCOM_TOKEN_FILE\): .* is empty/,
        );
      } finally {
        await cleanup();
      }
    });
  });

  describe('in wake mode', () => {
    it('takes --wake instead of --exec', () => {
      const config = loadRunConfig(
        { ...BASE_FLAGS, exec: undefined, wake: 'node wake.js --now' },
        BASE_ENV,
      );
      expect(config.runner).toEqual({ kind: 'wake', argv: ['node', 'wake.js', '--now'] });
    });

    it('lets a flag choose the mode over the environment', () => {
      const config = loadRunConfig(
        { ...BASE_FLAGS, exec: undefined, wake: 'node' },
        { ...BASE_ENV, AGENTCOM_EXEC: 'node handler.js' },
      );
      expect(config.runner.kind).toBe('wake');
    });

    it('refuses both in the environment', () => {
      expect(
        failingOption(
          { ...BASE_FLAGS, exec: undefined },
          { ...BASE_ENV, AGENTCOM_EXEC: 'node', AGENTCOM_WAKE: 'node' },
        ),
      ).toMatch(/^AGENTCOM_EXEC and AGENTCOM_WAKE: give one of them, not both/);
    });
  });

  describe('with a token file open to group or others', () => {
    it.each([0o644, 0o640, 0o604, 0o620, 0o660])(
      'refuses a file of mode %s, open to group or others',
      async (mode) => {
        const { dir, cleanup } = await makeTempDir();
        try {
          const file = join(dir, 'token');
          await writeFile(file, 'file-token\n');
          await chmod(file, mode);
          const octal = mode.toString(8);
          expect(failingOption({ ...BASE_FLAGS, tokenFile: file })).toBe(
            `--token-file (AGENTCOM_TOKEN_FILE): ${file} is readable or writable by group or ` +
              `others (mode 0${octal}); make it owner-only: chmod 600 ${file}`,
          );
        } finally {
          await cleanup();
        }
      },
    );

    it('takes an owner-only file (0600 or 0400)', async () => {
      const { dir, cleanup } = await makeTempDir();
      try {
        const file = join(dir, 'token');
        await writeFile(file, 'file-token\n');
        await chmod(file, 0o400);
        expect(loadRunConfig({ ...BASE_FLAGS, tokenFile: file }, BASE_ENV).token).toBe(
          'file-token',
        );
      } finally {
        await cleanup();
      }
    });
  });

  describe('with a config file', () => {
    const cf = useConfigFileFixture();

    const FULL = {
      hub: ['http://a:1', 'http://b:2'],
      agent: 'from-file',
      tokenFile: 'token',
      queues: ['q1', 'q2'],
      labels: { gpu: 'a100', zone: 'eu-1' },
      wake: [process.execPath, 'wake.js', 'two words'],
      stateDir: 'state',
      heartbeatMs: 250,
      drainGraceMs: 1000,
      killGraceMs: 100,
      ackTimeoutMs: 2000,
      failoverAttempts: 4,
      handshakeTimeoutMs: 1500,
      logLevel: 'debug',
      logFile: 'logs/sidecar.log',
    };

    it('reads every option from it, resolving relative paths against its directory', async () => {
      await cf.write(FULL);
      const config = loadRunConfig({ config: cf.file }, { PATH, HOME: '/home/someone' });
      expect(config).toMatchObject({
        hubUrls: ['http://a:1', 'http://b:2'],
        agentId: 'from-file',
        token: FIXTURE_TOKEN,
        queues: ['q1', 'q2'],
        labels: { gpu: 'a100', zone: 'eu-1' },
        runner: { kind: 'wake', argv: [process.execPath, 'wake.js', 'two words'] },
        stateDir: join(cf.dir, 'state'),
        heartbeatMs: 250,
        drainGraceMs: 1000,
        killGraceMs: 100,
        ackTimeoutMs: 2000,
        failoverAttempts: 4,
        handshakeTimeoutMs: 1500,
        logLevel: 'debug',
        logFile: join(cf.dir, 'logs', 'sidecar.log'),
        configFile: cf.file,
      });
    });

    it('ranks flags over the environment over the file over the defaults', async () => {
      await cf.write({ agent: 'file', heartbeatMs: 111, drainGraceMs: 222, killGraceMs: 333 });
      const config = loadRunConfig(
        { ...BASE_FLAGS, agent: 'flag', heartbeatMs: '1000', config: cf.file },
        {
          ...BASE_ENV,
          AGENTCOM_AGENT: 'env',
          AGENTCOM_HEARTBEAT_MS: '2000',
          AGENTCOM_DRAIN_GRACE_MS: '3000',
        },
      );
      expect(config).toMatchObject({
        agentId: 'flag',
        heartbeatMs: 1000,
        drainGraceMs: 3000,
        killGraceMs: 333,
        ackTimeoutMs: 10000,
      });
    });

    it('takes its labels as an object, an array of "key=value" or a "key=value,..." string', async () => {
      const labelsFrom = async (labels: unknown) => {
        await cf.write({ labels });
        return loadRunConfig({ ...BASE_FLAGS, config: cf.file }, BASE_ENV).labels;
      };
      expect(await labelsFrom({ gpu: 'a100', note: 'x=y z' })).toEqual({
        gpu: 'a100',
        note: 'x=y z',
      });
      expect(await labelsFrom(['gpu=a100', 'zone=eu-1'])).toEqual({ gpu: 'a100', zone: 'eu-1' });
      expect(await labelsFrom('gpu=a100, zone=eu-1')).toEqual({ gpu: 'a100', zone: 'eu-1' });
      expect(await labelsFrom({})).toEqual({});
    });

    it("ranks --label over AGENTCOM_LABELS over the file's labels, never merging them", async () => {
      await cf.write({ labels: { gpu: 'file', os: 'linux' } });
      const flags = { ...BASE_FLAGS, config: cf.file };
      const env = { ...BASE_ENV, AGENTCOM_LABELS: 'gpu=env' };
      expect(loadRunConfig(flags, BASE_ENV).labels).toEqual({ gpu: 'file', os: 'linux' });
      expect(loadRunConfig(flags, env).labels).toEqual({ gpu: 'env' });
      expect(loadRunConfig({ ...flags, label: ['gpu=flag'] }, env).labels).toEqual({
        gpu: 'flag',
      });
    });

    it('lets a flag choose exec over the wake command of the file', async () => {
      await cf.write(FULL);
      const config = loadRunConfig({ config: cf.file, exec: 'node handler.js' }, { PATH });
      expect(config.runner).toEqual({ kind: 'exec', argv: ['node', 'handler.js'] });
    });

    it("prefers AGENTCOM_TOKEN to the file's tokenFile, and --token-file to both", async () => {
      await cf.write(FULL);
      const env = { PATH, AGENTCOM_TOKEN: 'env-token' };
      expect(loadRunConfig({ config: cf.file }, env).token).toBe('env-token');
      await writeFile(join(cf.dir, 'flag-token'), 'flag-token', { mode: 0o600 });
      expect(
        loadRunConfig({ config: cf.file, tokenFile: join(cf.dir, 'flag-token') }, env).token,
      ).toBe('flag-token');
    });

    it('is found through AGENTCOM_CONFIG, and by default in XDG_CONFIG_HOME or ~/.config', async () => {
      await cf.write(FULL);
      expect(loadRunConfig({}, { PATH, AGENTCOM_CONFIG: cf.file }).agentId).toBe('from-file');
      await mkdir(join(cf.dir, 'xdg', 'agentcom'), { recursive: true });
      await writeFile(
        join(cf.dir, 'xdg', 'agentcom', 'sidecar.json'),
        JSON.stringify({ ...FULL, agent: 'xdg', tokenFile: join(cf.dir, 'token') }),
      );
      expect(loadRunConfig({}, { PATH, XDG_CONFIG_HOME: join(cf.dir, 'xdg') }).agentId).toBe('xdg');
      await mkdir(join(cf.dir, 'home', '.config', 'agentcom'), { recursive: true });
      await writeFile(
        join(cf.dir, 'home', '.config', 'agentcom', 'sidecar.json'),
        JSON.stringify({ ...FULL, agent: 'home', tokenFile: join(cf.dir, 'token') }),
      );
      expect(loadRunConfig({}, { PATH, HOME: join(cf.dir, 'home') }).agentId).toBe('home');
    });

    it('is optional at its default place', () => {
      expect(loadRunConfig(BASE_FLAGS, { ...BASE_ENV, HOME: cf.dir }).agentId).toBe('agent-1');
    });

    it.each<[string, unknown, RegExp]>([
      ['an unknown key', { hubb: 'x' }, /^--config \(.*sidecar\.json\): unknown key "hubb"$/],
      [
        'a token in the file',
        { token: 'x' },
        /^--config \(.*\): unknown key "token": the token never goes in the config file/,
      ],
      ['not JSON', '{"hub": ', /^--config \(.*\): not valid JSON/],
      ['not an object', '[1, 2]', /^--config \(.*\): must hold one JSON object$/],
      ['a number as text', { agent: 12 }, /^--config \(.*\): "agent" must be a string$/],
      ['a list of numbers', { queues: [1] }, /"queues" must be a string or an array of strings/],
      ['an empty argv', { exec: [] }, /"exec" must be a command line/],
      ['a boolean duration', { heartbeatMs: true }, /"heartbeatMs" must be a number/],
      [
        'a handshake timeout as a list',
        { handshakeTimeoutMs: [1000] },
        /^--config \(.*\): "handshakeTimeoutMs" must be a number$/,
      ],
      [
        'a "label" key',
        { label: 'gpu=a100' },
        /^--config \(.*\): unknown key "label": the key is "labels"$/,
      ],
      [
        'a label value with a comma',
        { labels: { gpu: 'a100', note: 'a,b' } },
        /^--config \(.*\): "labels": "note=a,b" holds a comma, which a label cannot/,
      ],
      [
        'a label item of an array with a comma',
        { labels: ['gpu=a100,zone=eu-1'] },
        /^--config \(.*\): "labels": "gpu=a100,zone=eu-1" holds a comma/,
      ],
      [
        'a label value that is not a string',
        { labels: { gpu: 1 } },
        /^--config \(.*\): "labels": the value of "gpu" must be a string$/,
      ],
      [
        'a label name with "="',
        { labels: { 'gpu=a': '100' } },
        /^--config \(.*\): "labels": the label name "gpu=a" cannot hold "="$/,
      ],
      [
        'labels as a number',
        { labels: 5 },
        /^--config \(.*\): "labels" must be an object of string values, an array of "key=value" strings/,
      ],
    ])('refuses %s, naming the key', async (_case, content, message) => {
      await cf.write(content);
      expect(failingOption({ ...BASE_FLAGS, config: cf.file })).toMatch(message);
    });

    it("names the file's key when one of its values is bad", async () => {
      await cf.write({ heartbeatMs: 5 });
      expect(failingOption({ ...BASE_FLAGS, config: cf.file })).toBe(
        `--heartbeat-ms (heartbeatMs in ${cf.file}): Too small: expected number to be >=50`,
      );
      await cf.write({ handshakeTimeoutMs: 'slow' });
      expect(failingOption({ ...BASE_FLAGS, config: cf.file })).toBe(
        `--handshake-timeout-ms (handshakeTimeoutMs in ${cf.file}): must be a whole number`,
      );
      await cf.write({ labels: ['gpu=a100', 'zone'] });
      expect(failingOption({ ...BASE_FLAGS, config: cf.file })).toBe(
        `--label (labels in ${cf.file}): "zone" is not key=value`,
      );
      await cf.write({ labels: { [`${'k'.repeat(65)}`]: 'v' } });
      expect(failingOption({ ...BASE_FLAGS, config: cf.file })).toBe(
        `--label (labels in ${cf.file}): Too big: expected string to have <=64 characters ` +
          `(label key "${'k'.repeat(65)}")`,
      );
    });

    it("names the file's key when its exec or wake command is not found", async () => {
      await cf.write({ exec: 'no-such-command-xyz --flag' });
      expect(failingOption({ ...BASE_FLAGS, exec: undefined, config: cf.file })).toBe(
        `--exec (exec in ${cf.file}): command "no-such-command-xyz" was not found on PATH`,
      );
      await cf.write({ wake: [join(cf.dir, 'no-such-wake')] });
      expect(failingOption({ ...BASE_FLAGS, exec: undefined, config: cf.file })).toBe(
        `--wake (wake in ${cf.file}): command "${join(cf.dir, 'no-such-wake')}" is not an executable file`,
      );
      // A variable over the file's command is named as such.
      expect(
        failingOption(
          { ...BASE_FLAGS, exec: undefined, config: cf.file },
          { ...BASE_ENV, AGENTCOM_EXEC: 'no-such-command-xyz' },
        ),
      ).toBe('--exec (AGENTCOM_EXEC): command "no-such-command-xyz" was not found on PATH');
    });

    it('refuses a missing file it was told to read', () => {
      expect(failingOption({ ...BASE_FLAGS, config: join(cf.dir, 'nope.json') })).toMatch(
        /^--config \(.*nope\.json\): cannot read the config file \(ENOENT\)$/,
      );
      expect(
        failingOption(BASE_FLAGS, { ...BASE_ENV, AGENTCOM_CONFIG: join(cf.dir, 'nope.json') }),
      ).toMatch(/ENOENT/);
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
        'a label without "="',
        { ...BASE_FLAGS, label: ['gpu=a100', 'zone'] },
        BASE_ENV,
        /^--label \(AGENTCOM_LABELS\): "zone" is not key=value$/,
      ],
      [
        'a label from the environment without "="',
        BASE_FLAGS,
        { ...BASE_ENV, AGENTCOM_LABELS: 'gpu=a100,a100' },
        /^--label \(AGENTCOM_LABELS\): "a100" is not key=value$/,
      ],
      [
        'a label with an empty key',
        { ...BASE_FLAGS, label: [' =a100'] },
        BASE_ENV,
        /^--label \(AGENTCOM_LABELS\): "=a100" has an empty key$/,
      ],
      [
        'a label key given twice',
        { ...BASE_FLAGS, label: ['gpu=a100', 'zone=eu-1,gpu=h100'] },
        BASE_ENV,
        /^--label \(AGENTCOM_LABELS\): the label "gpu" is given twice: give each key once$/,
      ],
      [
        'a label key too long',
        { ...BASE_FLAGS, label: [`${'k'.repeat(65)}=v`] },
        BASE_ENV,
        /^--label \(AGENTCOM_LABELS\): Too big: expected string to have <=64 characters \(label key "k{65}"\)$/,
      ],
      [
        'a label keyed __proto__ (zod dropped it silently)',
        { ...BASE_FLAGS, label: ['__proto__=x', 'gpu=a100'] },
        BASE_ENV,
        /^--label \(AGENTCOM_LABELS\): the label key __proto__ is reserved$/,
      ],
      [
        'a label value too long',
        { ...BASE_FLAGS, label: [`gpu=${'v'.repeat(257)}`] },
        BASE_ENV,
        /^--label \(AGENTCOM_LABELS\): Too big: expected string to have <=256 characters \(label "gpu"\)$/,
      ],
      [
        'more than 32 labels',
        BASE_FLAGS,
        {
          ...BASE_ENV,
          AGENTCOM_LABELS: Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(','),
        },
        /^--label \(AGENTCOM_LABELS\): at most 32 labels$/,
      ],
      [
        'no exec nor wake',
        { ...BASE_FLAGS, exec: undefined },
        BASE_ENV,
        /^--exec or --wake \(AGENTCOM_EXEC or AGENTCOM_WAKE\): one of them is required$/,
      ],
      [
        'both exec and wake',
        { ...BASE_FLAGS, wake: 'node' },
        BASE_ENV,
        /^--exec and --wake: give one of them, not both/,
      ],
      [
        'an unknown wake command',
        { ...BASE_FLAGS, exec: undefined, wake: 'no-such-command-xyz' },
        BASE_ENV,
        /^--wake \(AGENTCOM_WAKE\): command "no-such-command-xyz" was not found on PATH/,
      ],
      [
        'a state dir too long for a unix socket',
        { ...BASE_FLAGS, stateDir: `/tmp/${'d'.repeat(120)}` },
        BASE_ENV,
        /^--state-dir \(AGENTCOM_STATE_DIR\): is too long/,
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
        'a handshake timeout that is not a number',
        { ...BASE_FLAGS, handshakeTimeoutMs: '20s' },
        BASE_ENV,
        /^--handshake-timeout-ms \(AGENTCOM_HANDSHAKE_TIMEOUT_MS\): must be a whole number$/,
      ],
      [
        'a handshake timeout too small from env',
        BASE_FLAGS,
        { ...BASE_ENV, AGENTCOM_HANDSHAKE_TIMEOUT_MS: '50' },
        /^--handshake-timeout-ms \(AGENTCOM_HANDSHAKE_TIMEOUT_MS\): Too small: expected number to be >=100$/,
      ],
      [
        'a handshake timeout too large',
        { ...BASE_FLAGS, handshakeTimeoutMs: '600001' },
        BASE_ENV,
        /^--handshake-timeout-ms \(AGENTCOM_HANDSHAKE_TIMEOUT_MS\): Too big: expected number to be <=600000$/,
      ],
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

describe('resolveLocalTarget', () => {
  it('finds the socket in the state dir given by flag, environment or config file', async () => {
    const { dir, cleanup } = await makeTempDir();
    try {
      expect(resolveLocalTarget({ stateDir: '/s/flag' }, { AGENTCOM_STATE_DIR: '/s/env' })).toEqual(
        {
          stateDir: '/s/flag',
          socketPath: '/s/flag/sidecar.sock',
        },
      );
      expect(resolveLocalTarget({}, { AGENTCOM_STATE_DIR: '/s/env' }).stateDir).toBe('/s/env');
      const file = join(dir, 'sidecar.json');
      await writeFile(file, JSON.stringify({ stateDir: '/s/file', exec: 'whatever' }));
      expect(resolveLocalTarget({ config: file }, {}).stateDir).toBe('/s/file');
    } finally {
      await cleanup();
    }
  });

  it('falls back to the default state dir of the agent', () => {
    expect(resolveLocalTarget({ agent: 'a1' }, { HOME: '/home/x' }).socketPath).toBe(
      '/home/x/.local/state/agentcom/a1/sidecar.sock',
    );
    expect(resolveLocalTarget({}, { HOME: '/home/x', AGENTCOM_AGENT: 'a2' }).stateDir).toBe(
      '/home/x/.local/state/agentcom/a2',
    );
  });

  it('needs a state dir or an agent id', () => {
    expect(() => resolveLocalTarget({}, { HOME: '/home/x' })).toThrow(
      '--state-dir (AGENTCOM_STATE_DIR) or --agent (AGENTCOM_AGENT): is required to find the running sidecar',
    );
    expect(() => resolveLocalTarget({ agent: 'a:b' }, { HOME: '/home/x' })).toThrow(/^--agent /);
  });
});
