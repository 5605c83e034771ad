import { join } from 'node:path';
import type { TaskView } from '@agentcom/shared';
import { api, eventually } from '../helpers/hub';
import { useHubProcesses } from '../helpers/hub-processes-fixture';
import { mintToken, startHubProcess, startSidecarProcess } from '../helpers/processes';

const PRINTED_LINES = 170;
const HANDLER = join(__dirname, '..', 'fixtures', 'print-log-burst.mjs');

/**
 * A sidecar whose tasks print more log than the hub takes from one connection at once: it paces
 * its log batches for all its tasks together (the hub's flood budget is one per connection), so
 * the hub never closes it, and the lines it drops are said. A pace per task gave each task a
 * whole burst, and four such tasks in a row had the connection closed for flooding.
 */
describe('the log pace of a sidecar running log-heavy tasks in a row', () => {
  const cluster = useHubProcesses({ per: 'test', dirPrefix: 'agentcom-log-pace-' });

  it('keeps its connection over four tasks of ~8 MiB of log each, and says what it dropped', async () => {
    const hub = await startHubProcess(cluster.redis.url, cluster.prefix, 'hub-1');
    cluster.hubs.push(hub);
    const token = await mintToken(hub.url, 'printer');
    const sidecar = startSidecarProcess({
      hubUrls: [hub.url],
      agentId: 'printer',
      token,
      stateDir: join(cluster.dir, 'printer'),
      exec: `${process.execPath} ${HANDLER}`,
      env: { BURST_LINES: String(PRINTED_LINES) },
    });
    cluster.sidecars.push(sidecar);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', { payload: { i } });
      ids.push(created.body.id);
    }
    for (const id of ids) {
      await eventually(
        async () => {
          const task = (await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`)).body;
          return task.state === 'completed' ? task : undefined;
        },
        { what: `task ${id} completed`, timeoutMs: 60_000 },
      );
    }
    for (const id of ids) {
      const { logs } = (
        await api<{ logs: string[] }>(hub.url, 'GET', `/v1/tasks/${id}/logs?limit=1000`)
      ).body;
      // every line printed (the result's line too) is stored or counted as dropped
      const dropped = logs
        .map((line) => /^\[agentcom: (\d+) log lines dropped\]$/.exec(line)?.[1])
        .filter((count): count is string => count !== undefined);
      const stored = logs.length - dropped.length;
      const droppedLines = dropped.reduce((sum, count) => sum + Number(count), 0);
      expect(stored + droppedLines).toBe(PRINTED_LINES + 1);
    }
    expect(hub.output).not.toContain('closing its connection');
    expect(sidecar.output).not.toContain('E_RATE_LIMITED');
  });
});
