import { randomBytes } from 'node:crypto';
import type { TaskAssign } from '@agentcom/shared';
import { api } from './hub';
import { TestAgent } from './test-agent';

/**
 * Registers an agent of an id no other test uses (`<idPrefix>-<8 hex digits>`) serving `queue` on
 * the hub at `hubUrl`, connects it, and adds it to `closedAfterTest` (a fixture's or a describe
 * block's list of agents it closes after each test).
 */
export async function registerFreshAgent(
  closedAfterTest: TestAgent[],
  hubUrl: string,
  queue: string,
  idPrefix = 'agent',
): Promise<TestAgent> {
  const agentId = `${idPrefix}-${randomBytes(4).toString('hex')}`;
  const agent = await TestAgent.register(hubUrl, agentId, [queue]);
  closedAfterTest.push(agent);
  return agent;
}

/**
 * Creates a task (`body`, as POST /v1/tasks takes it) on the hub at `hubUrl` and resolves once the
 * hub pushed it to `agent`: the create's answer, and the push (`msg`), not accepted yet.
 */
export async function createPushed<Created = { id: string }>(
  agent: TestAgent,
  hubUrl: string,
  body: Record<string, unknown>,
): Promise<{ created: { status: number; body: Created }; msg: TaskAssign }> {
  const assigned = agent.nextAssignment();
  const created = await api<Created>(hubUrl, 'POST', '/v1/tasks', body);
  return { created, msg: await assigned };
}

/**
 * A fresh agent (see {@link registerFreshAgent}) of a queue of its own, and a task created in it
 * (`task` adds to its body) once pushed to the agent: the test accepts it, or not.
 */
export async function freshAgentAssigned(
  closedAfterTest: TestAgent[],
  hubUrl: string,
  task: Record<string, unknown> = {},
): Promise<{ agent: TestAgent; queue: string; id: string; assignment: TaskAssign }> {
  const queue = `q-${randomBytes(4).toString('hex')}`;
  const agent = await registerFreshAgent(closedAfterTest, hubUrl, queue);
  const { created, msg } = await createPushed(agent, hubUrl, { queue, payload: {}, ...task });
  expect(created.status).toBe(201);
  return { agent, queue, id: created.body.id, assignment: msg };
}
