import type { TaskView } from '@agentcom/shared';
import { api } from '../helpers/hub';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

type Page = { tasks: TaskView[]; nextCursor?: string };

/**
 * A page of `GET /v1/tasks` without a state filter holds `limit` tasks when there are that many:
 * the bound on the jobs a page reads counts the jobs it read, not the ones it asked an empty job
 * type for (each empty type counted as `limit` jobs: `limit=500` answered an empty first page).
 */
describe('a task listing page without a state filter', () => {
  const fixture = useTestHub();
  let hub: TestHub;
  const ids: string[] = [];
  beforeAll(async () => {
    ({ hub } = fixture);
    // three queues of three waiting tasks each: every other job type of each queue is empty
    for (const queue of ['qa', 'qb', 'qc']) {
      const tasks = [0, 1, 2].map((payload) => ({ queue, payload }));
      const created = await api<{ tasks: { id: string }[] }>(hub.url, 'POST', '/v1/tasks/batch', {
        tasks,
      });
      expect(created.status).toBe(201);
      ids.push(...created.body.tasks.map((task) => task.id));
    }
  });

  it.each(['limit=500', 'limit=50', 'limit=9', ''])(
    'holds every task of several queues on one page (%s), and ends the walk',
    async (query) => {
      const page = await api<Page>(hub.url, 'GET', `/v1/tasks?${query}`);
      expect(page.status).toBe(200);
      expect({ ids: page.body.tasks.map((task) => task.id), next: page.body.nextCursor }).toEqual({
        ids,
        next: query === 'limit=9' ? expect.any(String) : undefined,
      });
    },
  );

  it('walks more queues than a page reads types of, each task once', async () => {
    // 30 more queues: 198 (queue, type) pairs, most of them empty, over more than one page
    const more: string[] = [];
    for (let i = 10; i < 40; i++) {
      const body = { queue: `qd${i}`, payload: i };
      more.push((await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', body)).body.id);
    }
    const listed: string[] = [];
    let followed = 0;
    let cursor: string | undefined;
    do {
      const query = `/v1/tasks?limit=500${cursor ? `&cursor=${cursor}` : ''}`;
      const page = await api<Page>(hub.url, 'GET', query);
      expect(page.status).toBe(200);
      listed.push(...page.body.tasks.map((task) => task.id));
      cursor = page.body.nextCursor;
    } while (cursor && ++followed < 100);
    expect(followed).toBeGreaterThanOrEqual(1); // more than one page
    expect(listed).toEqual([...ids, ...more]);
  });
});
