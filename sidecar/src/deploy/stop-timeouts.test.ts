import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * pm2 and systemd SIGKILL the sidecar when their stop timeout is over. The sidecar's stop takes
 * up to the drain grace (the task finishing), then the kill grace (its process group stopped),
 * then the delivery of its report: each deploy file must leave all three, or a stop kills the
 * sidecar before it reports and the report waits for the next start.
 */

const ROOT = resolve(__dirname, '..', '..', '..');
const DEPLOY = join(ROOT, 'sidecar', 'deploy');
const REPORT_DELIVERY_MS = 5000;

/** `kill_timeout` of the ecosystem file as pm2 would load it with `env` exported. */
function pm2KillTimeout(env: Record<string, string>): number {
  const loaded = spawnSync(
    process.execPath,
    [
      '-e',
      `process.stdout.write(String(require(${JSON.stringify(join(DEPLOY, 'ecosystem.config.cjs'))}).apps[0].kill_timeout))`,
    ],
    { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8' },
  );
  expect(loaded.status).toBe(0);
  return Number(loaded.stdout);
}

describe('the deploy files leave a stopping sidecar time to report', () => {
  it('pm2: kill_timeout covers the drain grace, the kill grace and the report', () => {
    expect(pm2KillTimeout({})).toBeGreaterThanOrEqual(30_000 + 5_000 + REPORT_DELIVERY_MS);
    const drain = 12_000;
    const kill = 9_000;
    expect(
      pm2KillTimeout({
        AGENTCOM_DRAIN_GRACE_MS: String(drain),
        AGENTCOM_KILL_GRACE_MS: String(kill),
      }),
    ).toBeGreaterThanOrEqual(drain + kill + REPORT_DELIVERY_MS);
  });

  it('systemd: TimeoutStopSec covers the default drain grace, kill grace and report', () => {
    const unit = readFileSync(join(DEPLOY, 'agentcom-sidecar.service'), 'utf8');
    const seconds = Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)?.[1]);
    expect(seconds * 1000).toBeGreaterThanOrEqual(30_000 + 5_000 + REPORT_DELIVERY_MS);
  });
});
