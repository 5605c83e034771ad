/**
 * Preload (`node --require .tmp/bench/redis-io-counter.js`) that observes a process without
 * touching the code under test. On SIGUSR2 it writes a snapshot to `BENCH_IO_FILE`
 * (synchronously):
 * - with `BENCH_REDIS_PORT`, what the process sends to that Redis: `writes`, the
 *   `socket.write()` calls on its connections (ioredis writes each command, and each pipeline or
 *   MULTI block, with one call: a write is one round trip), `bytes`, and `commands` / `byName`,
 *   the RESP commands in them (a pipeline of 5 is 5 commands), so that Lua-internal calls (in
 *   Redis' `INFO commandstats`, not here) can be told apart;
 * - always, the event loop: cumulative active/idle time (utilization between two snapshots) and
 *   the delay histogram since the previous snapshot (reset by each snapshot).
 */
import { writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { RespCounter } from './lib/resp-counter';

const port = Number(process.env.BENCH_REDIS_PORT ?? 0);
const file = process.env.BENCH_IO_FILE ?? '';

if (file) {
  const counter = new RespCounter();
  if (port > 0) {
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
  }
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  process.on('SIGUSR2', () => {
    const elu = performance.eventLoopUtilization();
    const ms = (ns: number): number => Math.round(ns / 1e4) / 100;
    writeFileSync(
      file,
      JSON.stringify({
        ...counter.snapshot(),
        loop: {
          activeMs: elu.active,
          idleMs: elu.idle,
          delayP50Ms: ms(delay.percentile(50)),
          delayP99Ms: ms(delay.percentile(99)),
          delayMaxMs: ms(delay.max),
        },
      }),
    );
    delay.reset();
  });
}
