import type { Redis } from 'ioredis';

/**
 * How many times Redis ran `command` since it started (`INFO commandstats`, calls made from Lua
 * scripts included): deltas around an action count the commands it cost.
 */
export async function commandCalls(redis: Redis, command: string): Promise<number> {
  const stats = (await redis.info('commandstats')) as string;
  const line = stats.split('\r\n').find((l) => l.startsWith(`cmdstat_${command.toLowerCase()}:`));
  return Number(/calls=(\d+)/.exec(line ?? '')?.[1] ?? 0);
}
