import { setFlagsFromString } from 'node:v8';

/**
 * V8 flags a replica sets on itself, before it loads anything else (`main.ts` imports this
 * module first), so that they hold however the replica is started (`agentcom-hub`, `node
 * hub/dist/main.js`, pm2, Docker).
 *
 * `--no-allocation-site-pretenuring`: V8 allocates the objects of an allocation site (an object or
 * array literal in optimised code) straight in the old generation once most of them have
 * survived a young-generation GC. A replica starts with a small young generation, collected
 * every few milliseconds, so during its first seconds under load the objects of a task in
 * flight (a Redis command's arguments, its reply, the handlers' state) survive such GCs and their
 * sites are pretenured for good; V8 did not revert them after the young generation had grown.
 * Those objects then live a few milliseconds in the old generation, which only a full mark-compact
 * frees: a warm replica promoted about 5 MB/s and ran a mark-compact every 7–8 s under load.
 * Without pretenuring it promotes a quarter of that; hub CPU per task −15%, throughput +7%
 * (issue 7, eighth pass, `docs/scaling.md`).
 */
export const REPLICA_V8_FLAGS: readonly string[] = ['--no-allocation-site-pretenuring'];

/**
 * The flags to set: each of {@link REPLICA_V8_FLAGS} unless node's own command line already
 * names it (`node --allocation-site-pretenuring hub/dist/main.js` keeps V8's default: an A/B
 * comparison, or a way back).
 */
export function replicaV8Flags(execArgv: readonly string[]): string[] {
  const named = (flag: string): boolean => {
    const name = flag.replace(/^--(no-)?/, '').replace(/_/g, '-');
    return execArgv.some(
      (arg) =>
        arg
          .replace(/^--(no-)?/, '')
          .replace(/_/g, '-')
          .split('=')[0] === name,
    );
  };
  return REPLICA_V8_FLAGS.filter((flag) => !named(flag));
}

for (const flag of replicaV8Flags(process.execArgv)) setFlagsFromString(flag);
