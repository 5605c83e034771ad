import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, freePortRange } from './redis-server';

/** The most hubs a test's cluster runs: their ports, from `CLUSTER_HUB_BASE` on, are all free. */
const MAX_HUBS = 3;

/**
 * The environment of a private `scripts/cluster.mjs` run: its own state dir (`dir`, to remove
 * afterwards) and free loopback ports, plus `extra`.
 */
export async function clusterScriptEnv(
  dirPrefix: string,
  extra: NodeJS.ProcessEnv = {},
): Promise<{ dir: string; env: NodeJS.ProcessEnv }> {
  const dir = mkdtempSync(join(tmpdir(), dirPrefix));
  const env = {
    ...process.env,
    CLUSTER_DIR: dir,
    CLUSTER_PORT: String(await freePort()),
    CLUSTER_STATS_PORT: String(await freePort()),
    CLUSTER_REDIS_PORT: String(await freePort()),
    CLUSTER_HUB_BASE: String(await freePortRange(MAX_HUBS)),
    ...extra,
  };
  return { dir, env };
}
