import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisKeys } from '../../hub/src/redis/keys';
import { api, eventually } from '../helpers/hub';
import { useHubProcesses } from '../helpers/hub-processes-fixture';
import { startHubProcess } from '../helpers/processes';
import type { RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

jest.setTimeout(60_000);

/**
 * A replica killed with kill -9 and started again under the same `HUB_ID` (compose and
 * `make cluster` give replicas fixed ids): the other replicas never take that id for gone, so
 * the new process must itself let go of the agents its predecessor held.
 */
describe('a replica restarted under the same HUB_ID', () => {
  const agents: TestAgent[] = [];
  const cluster = useHubProcesses({
    per: 'describe',
    beforeKill: () => {
      for (const agent of agents) agent.close();
    },
  });
  const { hubs } = cluster;
  let redis: RedisProcess;
  beforeAll(() => ({ redis } = cluster));

  it('records the disconnects of the agents its predecessor held: the idle one goes offline, the task holder loses its task at the lease', async () => {
    const prefix = `r${randomBytes(3).toString('hex')}`;
    const keys = new RedisKeys(prefix);
    const first = await startHubProcess(redis.url, prefix, 'hub-x');
    hubs.push(first);
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const idle = await TestAgent.register(first.url, 'idle-agent', [`${queue}-idle`]);
    const worker = await TestAgent.register(first.url, 'busy-agent', [queue]);
    agents.push(idle, worker);
    const assigned = worker.nextAssignment();
    const created = await api<{ id: string }>(first.url, 'POST', '/v1/tasks', {
      queue,
      payload: {},
    });
    const msg = await assigned;
    expect(await worker.accept(msg)).toMatchObject({ ok: true });

    await first.kill('SIGKILL'); // nothing recorded on the way out
    const again = await startHubProcess(redis.url, prefix, 'hub-x');
    hubs.push(again);

    // ready means the predecessor's agents were let go of before the first connection
    const admin = new Redis(redis.url);
    try {
      expect(await admin.hmget(keys.agent('idle-agent'), 'state', 'socketId')).toEqual([
        'offline',
        null,
      ]);
      const [state, socketId, disconnectedAt] = await admin.hmget(
        keys.agent('busy-agent'),
        'state',
        'socketId',
        'disconnectedAt',
      );
      expect({ state, socketId, disconnected: disconnectedAt !== null }).toEqual({
        state: 'working',
        socketId: null,
        disconnected: true,
      });
      // the lease (3 s in tests) runs out: the agent goes offline and its task back to wait
      await eventually(
        async () =>
          (await admin.hget(keys.agent('busy-agent'), 'state')) === 'offline' ? true : undefined,
        { what: 'the task holder offline after its lease', timeoutMs: 20_000 },
      );
      // and, its lock no longer extended by anyone, the stalled checker puts the task back
      await eventually(
        async () => {
          const task = await api<{ state: string }>(
            again.url,
            'GET',
            `/v1/tasks/${created.body.id}`,
          );
          return task.body.state === 'waiting' ? true : undefined;
        },
        { what: 'the task back in wait', timeoutMs: 20_000 },
      );
      const reasons = (await admin.xrange(keys.events, '-', '+'))
        .map(([, fields]) => Object.fromEntries(pairs(fields)))
        .filter((event) => event.agent === 'idle-agent' || event.agent === 'busy-agent')
        .map((event) => `${event.agent} ${event.reason}`);
      expect(reasons).toEqual(
        expect.arrayContaining(['idle-agent replica_gone', 'busy-agent replica_gone']),
      );
    } finally {
      admin.disconnect();
    }
  });
});

function pairs(fields: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i + 1 < fields.length; i += 2) out.push([fields[i]!, fields[i + 1]!]);
  return out;
}
