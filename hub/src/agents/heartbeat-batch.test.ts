import type { AgentPresence } from '../fsm/agent-store';
import { HeartbeatBatch, type Heartbeat } from './heartbeat-batch';

const presence = (beat: Heartbeat): AgentPresence => ({
  state: 'idle',
  socketId: beat.socketId,
  taskId: undefined,
  token: undefined,
  taskQueue: undefined,
  assignedAt: undefined,
});

describe('HeartbeatBatch', () => {
  it('checks the heartbeats of one window in one call and answers each with its own result', async () => {
    const calls: Heartbeat[][] = [];
    const batch = new HeartbeatBatch(async (beats) => {
      calls.push([...beats]);
      return beats.map((b) => (b.agentId === 'ghost' ? undefined : presence(b)));
    }, 20);
    const answers = await Promise.all([
      batch.check({ agentId: 'a', socketId: 's1', tokenHash: 'h' }),
      batch.check({ agentId: 'ghost', socketId: 's2', tokenHash: 'h' }),
      batch.check({ agentId: 'b', socketId: 's3', tokenHash: 'h' }),
    ]);
    expect(calls).toHaveLength(1);
    expect(calls[0]?.map((b) => b.agentId)).toEqual(['a', 'ghost', 'b']);
    expect(answers.map((p) => p?.socketId)).toEqual(['s1', undefined, 's3']);
  });

  it('sends a full batch at once, without waiting for the window', async () => {
    const sizes: number[] = [];
    const batch = new HeartbeatBatch(
      async (beats) => {
        sizes.push(beats.length);
        return beats.map(presence);
      },
      60_000,
      2,
    );
    // a 60 s window: only the size limit can send these two
    await Promise.all([
      batch.check({ agentId: 'a', socketId: 's1', tokenHash: 'h' }),
      batch.check({ agentId: 'b', socketId: 's2', tokenHash: 'h' }),
    ]);
    expect(sizes).toEqual([2]);
  });

  it('fails every heartbeat of a batch whose call failed, and later batches still run', async () => {
    let fail = true;
    const batch = new HeartbeatBatch(async (beats) => {
      if (fail) throw new Error('redis down');
      return beats.map(presence);
    }, 5);
    const failed = await Promise.allSettled([
      batch.check({ agentId: 'a', socketId: 's1', tokenHash: 'h' }),
      batch.check({ agentId: 'b', socketId: 's2', tokenHash: 'h' }),
    ]);
    expect(failed.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    fail = false;
    expect((await batch.check({ agentId: 'a', socketId: 's1', tokenHash: 'h' }))?.state).toBe(
      'idle',
    );
  });

  it('gives a heartbeat of a connection whose check is unanswered that answer, adding no check', async () => {
    const calls: Heartbeat[][] = [];
    let answer: () => void = () => undefined;
    const batch = new HeartbeatBatch((beats) => {
      calls.push([...beats]);
      return new Promise((resolve) => (answer = () => resolve(beats.map(presence))));
    }, 5);
    const first = batch.check({ agentId: 'a', socketId: 's1', tokenHash: 'h' });
    await new Promise((resolve) => setTimeout(resolve, 20)); // the first check is sent by now
    const again = [1, 2, 3].map(() =>
      batch.check({ agentId: 'a', socketId: 's1', tokenHash: 'h' }),
    );
    const other = batch.check({ agentId: 'a', socketId: 's2', tokenHash: 'h' });
    answer();
    expect(await Promise.all([first, ...again])).toEqual(
      Array(4).fill(presence({ agentId: 'a', socketId: 's1', tokenHash: 'h' })),
    );
    await new Promise((resolve) => setTimeout(resolve, 20)); // the second connection's batch is sent
    answer();
    expect((await other)?.socketId).toBe('s2');
    expect(calls.map((beats) => beats.map((b) => b.socketId))).toEqual([['s1'], ['s2']]);
    // answered: the next heartbeat is checked again
    const next = batch.check({ agentId: 'a', socketId: 's1', tokenHash: 'h' });
    await new Promise((resolve) => setTimeout(resolve, 20));
    answer();
    await next;
    expect(calls).toHaveLength(3);
  });
});
