/**
 * Preload (`node --require .tmp/bench/redis-io-counter.js`) that counts what a process sends to
 * one Redis server, client side, without touching the code under test:
 * - `writes`: `socket.write()` calls on connections to `BENCH_REDIS_PORT`. ioredis writes each
 *   command, and each pipeline or MULTI block, with one call: a write is one round trip.
 * - `commands` / `byName`: the RESP commands in those writes (a pipeline of 5 is 5 commands), so
 *   Lua-internal calls (in Redis' `INFO commandstats`, not here) can be told apart.
 * On SIGUSR2 it writes `{seq, writes, commands, byName}` to `BENCH_IO_FILE` (synchronously).
 */
import { writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { RespCounter } from './lib/resp-counter';

const port = Number(process.env.BENCH_REDIS_PORT ?? 0);
const file = process.env.BENCH_IO_FILE ?? '';

if (port > 0 && file) {
  const counter = new RespCounter();
  const parsers = new WeakMap<Socket, (chunk: Buffer | string) => void>();
  const original = Socket.prototype.write;
  const patched = function (this: Socket, chunk: unknown, ...rest: unknown[]): boolean {
    if (this.remotePort === port && (typeof chunk === 'string' || Buffer.isBuffer(chunk))) {
      let feed = parsers.get(this);
      if (!feed) {
        feed = counter.stream();
        parsers.set(this, feed);
      }
      counter.writes++;
      feed(chunk);
    }
    return (original as (this: Socket, ...args: unknown[]) => boolean).call(this, chunk, ...rest);
  };
  Socket.prototype.write = patched as typeof original;
  let seq = 0;
  process.on('SIGUSR2', () => {
    seq++;
    writeFileSync(file, JSON.stringify({ seq, ...counter.snapshot() }));
  });
}
