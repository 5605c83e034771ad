import type { HubError, TaskAssign, TaskCancel } from '@agentcom/shared';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { Dispatcher } from '../../hub/src/dispatch/dispatcher';
import type { AgentNotifier } from '../../hub/src/dispatch/notifier';
import { AgentStore } from '../../hub/src/fsm/agent-store';
import { createLogger } from '../../hub/src/logger';
import { HubMetrics } from '../../hub/src/metrics/hub-metrics';
import type { QueueRegistry } from '../../hub/src/queues/queue-registry';
import { RedisKeys } from '../../hub/src/redis/keys';
import { agentScripts } from '../../hub/src/redis/scripts';
import { IdempotencyKeys } from '../../hub/src/tasks/idempotency-keys';
import { connectIdleAgent, testQueueRegistry } from '../helpers/hub-parts';
import { useRedisClient } from '../helpers/redis-server';

/** What the dispatcher pushed, in order; `waitFor(n)` resolves once n pushes were made. */
class RecordingNotifier implements AgentNotifier {
  readonly assigns: Array<{ agentId: string; message: TaskAssign }> = [];
  private waiters: Array<{ n: number; resolve: () => void }> = [];

  assign(agentId: string, message: TaskAssign): void {
    this.assigns.push({ agentId, message });
    this.waiters = this.waiters.filter((w) => {
      if (this.assigns.length < w.n) return true;
      w.resolve();
      return false;
    });
  }
  cancel(_agentId: string, _message: TaskCancel): void {}
  closeStaleTokenConnections(_agentId: string, _message: HubError): void {}

  /** Resolves at the n-th push; rejects after `ms` with what was pushed by then. */
  waitFor(n: number, ms = 5000): Promise<void> {
    if (this.assigns.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.assigns.length} of ${n} tasks pushed after ${ms} ms`)),
        ms,
      );
      this.waiters.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }
}

describe('Dispatcher against a real redis-server and BullMQ', () => {
  let redis: Redis;
  let n = 0;
  let keys: RedisKeys;
  let store: AgentStore;
  let registry: QueueRegistry;
  let notifier: RecordingNotifier;
  let dispatcher: Dispatcher;
  let producer: Queue;

  const db = useRedisClient();
  beforeEach(() => {
    redis = db.client;
    keys = new RedisKeys(`disp${++n}`);
    const logger = createLogger({ level: 'silent', hubId: 'hub-a' });
    store = new AgentStore({ redis, scripts: agentScripts(redis), keys, hubId: 'hub-a' });
    registry = testQueueRegistry(redis, keys, logger);
    notifier = new RecordingNotifier();
    dispatcher = new Dispatcher({
      keys,
      agents: store,
      queues: registry,
      notifier,
      ackTimeoutMs: 30_000,
      leaseMs: 60_000,
      logger,
      metrics: new HubMetrics('hub-a'),
      idempotency: new IdempotencyKeys({ redis, keys }),
    });
    producer = new Queue('q1', { connection: redis, prefix: keys.bullPrefix });
  });
  afterEach(async () => {
    await dispatcher.stop();
    await registry.close();
    await producer.close();
  });

  it('a step handed over by a report that saw more work starts the queue loop, which assigns the rest', async () => {
    for (const id of ['a', 'b', 'c']) await connectIdleAgent(store, id, ['q1']);
    // added straight to BullMQ: nothing triggers the dispatcher but the step below
    const jobs = await producer.addBulk(
      [1, 2, 3].map((i) => ({ name: 'task', data: { payload: i } })),
    );
    await registry.get('q1');
    const step = await store.claimAndFetch('q1', 30_000, 60_000);
    expect(step).toMatchObject({ outcome: 'assigned', more: true });
    if (!step) throw new Error('no step');

    dispatcher.continueClaim(step);
    await notifier.waitFor(3);

    const pushed = notifier.assigns.map((a) => a.message.task.id).sort();
    expect(pushed).toEqual(jobs.map((job) => job.id).sort());
    expect(new Set(notifier.assigns.map((a) => a.agentId))).toEqual(new Set(['a', 'b', 'c']));
    for (const { agentId, message } of notifier.assigns) {
      expect(await store.get(agentId)).toMatchObject({
        state: 'assigned',
        taskId: message.task.id,
        token: message.token,
      });
    }
    expect(await producer.getWaitingCount()).toBe(0);
    expect(await producer.getActiveCount()).toBe(3);
  });
});
