import { Command, Redis } from 'ioredis';
import { encodeCommand, LuaScript } from '../../hub/src/redis/script-command';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/** What ioredis itself writes for a command with these arguments. */
function ioredisEncoding(name: string, args: (string | Buffer)[]): Buffer {
  const written = new Command(name, args).toWritable({});
  return Buffer.isBuffer(written) ? written : Buffer.from(written);
}

const asBuffer = (encoded: string | Buffer): Buffer =>
  Buffer.isBuffer(encoded) ? encoded : Buffer.from(encoded);

describe('encodeCommand', () => {
  it('writes what ioredis writes: strings only, then with binary Buffers among them', () => {
    const strings = ['sha', '2', '{a}:k1', '{a}:k2', 'héllo wörld ✓', '', '12345'];
    expect(encodeCommand('evalsha', strings)).toBe(
      ioredisEncoding('evalsha', strings).toString('utf8'),
    );
    const binary = Buffer.from([0x93, 0x00, 0xff, 0x0d, 0x0a, 0xc3, 0x28]);
    const mixed = ['sha', '1', 'key', binary, 'ünïcode', Buffer.alloc(0), binary, 'end'];
    expect(
      asBuffer(encodeCommand('evalsha', mixed)).equals(ioredisEncoding('evalsha', mixed)),
    ).toBe(true);
  });
});

describe('LuaScript against a real redis-server', () => {
  let server: RedisProcess;
  let client: Redis;
  /** Echoes its KEYS and ARGV back, byte for byte. */
  const echo = new LuaScript(
    'echo',
    'local out = {} for i = 1, #KEYS do out[#out + 1] = KEYS[i] end ' +
      'for i = 1, #ARGV do out[#out + 1] = ARGV[i] end return out',
  );

  beforeAll(async () => {
    server = await startRedis();
    client = new Redis(server.url, { maxRetriesPerRequest: null, retryStrategy: () => 50 });
  });
  afterAll(async () => {
    client.disconnect();
    await server.dispose();
  });

  it('passes keys, strings, numbers and binary arguments through unchanged', async () => {
    const binary = Buffer.from([0x00, 0xff, 0x0d, 0x0a, 0xc3, 0x24]);
    await expect(client.evalsha(echo.sha, 0)).rejects.toThrow('NOSCRIPT');
    const echoed = await echo.run<string[]>(client, ['k1', 'ké2'], ['a', 42, '', 'ü✓']);
    expect(echoed).toEqual(['k1', 'ké2', 'a', '42', '', 'ü✓']);
    // each ARGV as hex, as Redis received it
    const hex = new LuaScript(
      'hex',
      'local out = {} for i = 1, #ARGV do local h = {} for j = 1, #ARGV[i] do ' +
        'h[#h + 1] = string.format("%02x", string.byte(ARGV[i], j)) end ' +
        'out[#out + 1] = table.concat(h) end return out',
    );
    const received = await hex.run<string[]>(client, [], [binary, 'é', Buffer.alloc(0), binary]);
    expect(received).toEqual([
      binary.toString('hex'),
      Buffer.from('é').toString('hex'),
      '',
      binary.toString('hex'),
    ]);
  });

  it('runs again after SCRIPT FLUSH and after a Redis restart (NOSCRIPT: sent again as EVAL)', async () => {
    await expect(echo.run<string[]>(client, ['k'], ['v'])).resolves.toEqual(['k', 'v']);
    await client.script('FLUSH');
    expect(await client.script('EXISTS', echo.sha)).toEqual([0]);
    await expect(echo.run<string[]>(client, ['k'], ['v'])).resolves.toEqual(['k', 'v']);
    expect(await client.script('EXISTS', echo.sha)).toEqual([1]);

    // a new Redis knows no script: the call sent on the new connection is answered NOSCRIPT
    const reconnected = new Promise<void>((resolve) => client.once('ready', () => resolve()));
    await server.stop('SIGKILL');
    await server.restart();
    await reconnected;
    expect(await client.script('EXISTS', echo.sha)).toEqual([0]);
    await expect(echo.run<string[]>(client, ['k2'], [7])).resolves.toEqual(['k2', '7']);
    expect(await client.script('EXISTS', echo.sha)).toEqual([1]);
  });

  it('rejects with the script error itself, not a retry', async () => {
    const failing = new LuaScript('failing', 'return redis.error_reply("E_TEST broken")');
    await expect(failing.run(client, [])).rejects.toThrow('E_TEST broken');
  });
});
