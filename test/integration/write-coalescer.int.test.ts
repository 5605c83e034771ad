import type { Socket } from 'node:net';
import { Redis } from 'ioredis';
import { coalesceWrites } from '../../hub/src/redis/write-coalescer';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/** The next turn of the event loop: the coalescer's turn has ended by then. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function socketOf(client: Redis): Socket {
  const stream = (client as unknown as { stream?: Socket }).stream;
  if (!stream) throw new Error('no socket');
  return stream;
}

/** Counts the writes the socket hands to the kernel: one per `_write`, one per `_writev`. */
function countSocketWrites(stream: Socket): { single: number; gathered: number[] } {
  const counts = { single: 0, gathered: [] as number[] };
  const target = stream as unknown as {
    _write: (...args: unknown[]) => void;
    _writev: (chunks: unknown[], ...rest: unknown[]) => void;
  };
  const write = target._write.bind(stream);
  const writev = target._writev.bind(stream);
  target._write = (...args) => {
    counts.single++;
    write(...args);
  };
  target._writev = (chunks, ...rest) => {
    counts.gathered.push(chunks.length);
    writev(chunks, ...rest);
  };
  return counts;
}

function ready(client: Redis): Promise<void> {
  return client.status === 'ready'
    ? Promise.resolve()
    : new Promise((resolve) => client.once('ready', () => resolve()));
}

describe('coalesceWrites against a real redis-server', () => {
  let server: RedisProcess;
  let client: Redis;

  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await server.dispose();
  });
  beforeEach(async () => {
    client = new Redis(server.url, { maxRetriesPerRequest: null, retryStrategy: () => 50 });
    coalesceWrites(client);
    await ready(client);
    await client.flushall();
    await nextTurn();
  });
  afterEach(() => {
    client.disconnect();
  });

  it('sends the first command of a turn at once and corks the socket for the ones after it', async () => {
    const stream = socketOf(client);
    const first = client.set('k1', 'a');
    expect(stream.writableCorked).toBe(0);
    const second = client.set('k2', 'b');
    expect(stream.writableCorked).toBe(1);
    await nextTurn();
    expect(stream.writableCorked).toBe(0);
    await expect(Promise.all([first, second])).resolves.toEqual(['OK', 'OK']);
  });

  it('puts the commands of one turn after the first into one write, every reply in order', async () => {
    const writes = countSocketWrites(socketOf(client));
    const sets = Array.from({ length: 200 }, (_, i) => client.set(`key:${i}`, String(i)));
    const gets = Array.from({ length: 200 }, (_, i) => client.get(`key:${i}`));
    const incrs = Array.from({ length: 50 }, () => client.incr('counter'));
    expect(await Promise.all(sets)).toEqual(sets.map(() => 'OK'));
    expect(await Promise.all(gets)).toEqual(gets.map((_, i) => String(i)));
    expect(await Promise.all(incrs)).toEqual(incrs.map((_, i) => i + 1));
    expect(writes).toEqual({ single: 1, gathered: [449] });
  });

  it('patches the new socket after Redis restarts', async () => {
    const before = socketOf(client);
    const reconnected = new Promise<void>((resolve) => client.once('ready', () => resolve()));
    await server.stop('SIGKILL');
    await server.restart();
    await reconnected;
    await nextTurn();
    const after = socketOf(client);
    expect(after).not.toBe(before);
    const first = client.set('again', '1');
    const second = client.get('again');
    expect(after.writableCorked).toBe(1);
    await expect(Promise.all([first, second])).resolves.toEqual(['OK', '1']);
  });
});
