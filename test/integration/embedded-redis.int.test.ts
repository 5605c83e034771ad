import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { answersPing, redisServerArgs, spawnRedisServer } from '../../hub/src/embedded-redis';
import { freePort } from '../helpers/redis-server';

describe('spawnRedisServer (the embedded Redis, the tests and the benchmarks start Redis with it)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'agentcom-spawn-redis-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('resolves once the server answers PING, with the configuration of redisServerArgs', async () => {
    const port = await freePort();
    const child = await spawnRedisServer(
      port,
      redisServerArgs(port, dir, { appendonly: false }),
      dir,
    );
    try {
      expect(await answersPing(port)).toBe(true);
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
  });

  it('rejects at once, naming the exit and the directory, when the server exits on bad arguments', async () => {
    const port = await freePort();
    const started = Date.now();
    await expect(
      spawnRedisServer(
        port,
        [...redisServerArgs(port, dir, { appendonly: false }), '--no-such-option', 'x'],
        dir,
      ),
    ).rejects.toThrow(`redis-server exited with 1 (see ${dir})`);
    // not the 10 s PING deadline
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await answersPing(port)).toBe(false);
  });
});
