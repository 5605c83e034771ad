import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { EXIT_CODES } from './exit-codes';
import { runCommand } from './run-command';
import { useConfigFileFixture } from './test-support/config-file-fixture';

/**
 * `agentcom-sidecar run` in-process, for the failures found after the config loaded: they name
 * the setting where its value came from. The bundled CLI is tested in cli.test.ts.
 */

describe('runCommand', () => {
  const cf = useConfigFileFixture();

  /** Runs with a config file holding `settings` besides what `run` needs; resolves with stderr. */
  const run = async (settings: Record<string, string>) => {
    await cf.write({
      hub: 'http://127.0.0.1:1',
      agent: 'a1',
      queues: 'default',
      tokenFile: 'token',
      exec: [process.execPath, '-e', ''],
      ...settings,
    });
    const stderr = new PassThrough();
    let text = '';
    stderr.on('data', (chunk: Buffer) => (text += chunk.toString()));
    const code = await runCommand({ config: cf.file }, stderr, { PATH: process.env.PATH ?? '' });
    return { code, stderr: text };
  };

  it("names the config file's logFile when the log file cannot be opened", async () => {
    expect(await run({ logFile: cf.dir })).toEqual({
      code: EXIT_CODES.BAD_CONFIG,
      stderr: `agentcom-sidecar: --log-file (logFile in ${cf.file}): cannot open ${cf.dir} (EISDIR)\n`,
    });
  });

  it("names the config file's stateDir when another process holds it", async () => {
    const stateDir = join(cf.dir, 'state');
    await mkdir(stateDir, { mode: 0o700 });
    // A live process of ours holds the lock (a lock naming its pid alone, as older sidecars wrote).
    const holder = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], {
      stdio: 'ignore',
    });
    await once(holder, 'spawn');
    try {
      await writeFile(join(stateDir, 'sidecar.lock'), `${holder.pid}\n`);
      const { code, stderr } = await run({ stateDir });
      expect(code).toBe(EXIT_CODES.BAD_CONFIG);
      expect(stderr).toBe(
        `agentcom-sidecar: --state-dir (stateDir in ${cf.file}): the state dir is in use by process ${holder.pid} ` +
          `(${join(stateDir, 'sidecar.lock')}); run one sidecar per state dir, or delete the lock file if that process is not a sidecar\n`,
      );
    } finally {
      holder.kill();
      await once(holder, 'exit');
    }
  });
});
