import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { RedisServer } from './redis';
import { ROOT, round } from './util';

/** Redis's time in one script (or command), per task, from SLOWLOG. */
export interface ScriptTime {
  /** agentcom's script name, `bull:<name>` for BullMQ's own, or the command. */
  name: string;
  callsPerTask: number;
  /** Median time of one call, µs (a script's includes the commands it runs). */
  p50Us: number;
  usPerTask: number;
}

type ScriptModule = Record<string, { name?: unknown; content?: unknown } | undefined>;

/**
 * The name of each script by its SHA1, as EVALSHA names it: agentcom's scripts as the built hub
 * composes them (`hub/dist`), and the scripts of the installed bullmq package.
 */
function scriptNamesBySha(): Map<string, string> {
  const sha = (text: string): string => createHash('sha1').update(text).digest('hex');
  const load = createRequire(join(ROOT, 'package.json'));
  const hubScripts = load(join(ROOT, 'hub', 'dist', 'redis', 'scripts.js')) as {
    SCRIPT_NAMES: readonly string[];
    scriptSource(name: string): string;
  };
  const names = new Map<string, string>();
  for (const name of hubScripts.SCRIPT_NAMES) names.set(sha(hubScripts.scriptSource(name)), name);
  const bullScripts = join(dirname(load.resolve('bullmq/package.json')), 'dist', 'cjs', 'scripts');
  for (const file of readdirSync(bullScripts)) {
    if (!file.endsWith('.js') || file === 'index.js') continue;
    for (const script of Object.values(load(join(bullScripts, file)) as ScriptModule)) {
      if (typeof script?.content === 'string' && typeof script.name === 'string') {
        names.set(sha(script.content), `bull:${script.name}`);
      }
    }
  }
  return names;
}

/**
 * Redis's time per script while `run` submits tasks, from SLOWLOG with every command logged
 * (`slowlog-log-slower-than 0`: this adds to Redis's work, so no other figure is taken meanwhile).
 * SLOWLOG times a script's call with the commands it runs, and logs those commands on their own
 * lines too (Redis 7.0): a command's row counts its calls inside scripts. The `top` largest by time
 * per task, largest first.
 */
export async function scriptTimes(
  redis: RedisServer,
  run: () => Promise<{ submitted: number; missing: number }>,
  top = 8,
): Promise<ScriptTime[]> {
  const names = scriptNamesBySha();
  const { client } = redis;
  // put back as they were after: the figures taken after this one see the Redis they saw before
  const [, maxLen] = (await client.config('GET', 'slowlog-max-len')) as [string, string];
  const [, slowerThan] = (await client.config('GET', 'slowlog-log-slower-than')) as [
    string,
    string,
  ];
  await client.config('SET', 'slowlog-max-len', '1000000');
  await client.config('SET', 'slowlog-log-slower-than', '0');
  await client.slowlog('RESET');
  let submitted: number;
  try {
    const done = await run();
    if (done.missing > 0) throw new Error(`script times: ${done.missing} tasks did not complete`);
    submitted = done.submitted;
  } finally {
    await client.config('SET', 'slowlog-log-slower-than', slowerThan);
  }
  // each entry: [id, unix time, µs, [command, ...args], client address, client name]
  const entries = (await client.call('SLOWLOG', 'GET', '-1')) as Array<
    [number, number, number, string[]]
  >;
  await client.slowlog('RESET');
  await client.config('SET', 'slowlog-max-len', maxLen);
  const times = new Map<string, number[]>();
  for (const [, , us, args] of entries) {
    const command = String(args[0]).toLowerCase();
    if (command === 'slowlog' || command === 'config') continue; // the bench's own
    const name = command.startsWith('evalsha')
      ? (names.get(String(args[1])) ?? `unknown script ${String(args[1]).slice(0, 8)}`)
      : command;
    const list = times.get(name) ?? [];
    list.push(us);
    times.set(name, list);
  }
  return [...times]
    .map(([name, list]) => {
      list.sort((a, b) => a - b);
      const total = list.reduce((sum, us) => sum + us, 0);
      return {
        name,
        callsPerTask: round(list.length / submitted),
        p50Us: list[Math.floor(list.length / 2)] ?? 0,
        usPerTask: round(total / submitted),
      };
    })
    .sort((a, b) => b.usPerTask - a.usPerTask)
    .slice(0, top);
}
