import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
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
    const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true });
    try {
      expect(await answersPing(port)).toBe(true);
      await client.connect();
      const config = async (name: string): Promise<string | undefined> =>
        ((await client.config('GET', name)) as string[])[1];
      expect({
        dir: await config('dir'),
        appendonly: await config('appendonly'),
        save: await config('save'),
        maxmemoryPolicy: await config('maxmemory-policy'),
      }).toEqual({ dir, appendonly: 'no', save: '', maxmemoryPolicy: 'noeviction' });
    } finally {
      client.disconnect();
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
