import type { AgentPresence } from '../fsm/agent-store';
import { HeartbeatBatch, type Heartbeat } from './heartbeat-batch';

const presence = (beat: Heartbeat): AgentPresence => ({
  state: 'idle',
  socketId: beat.socketId,
  taskId: undefined,
  token: undefined,
  taskQueue: undefined,
});

describe('HeartbeatBatch', () => {
  it('checks the heartbeats of one window in one call and answers each with its own result', async () => {
    const calls: Heartbeat[][] = [];
    const batch = new HeartbeatBatch(async (beats) => {
      calls.push([...beats]);
      return beats.map((b) => (b.agentId === 'ghost' ? undefined : presence(b)));
    }, 20);
    const answers = await Promise.all([
      batch.check({ agentId: 'a', socketId: 's1' }),
      batch.check({ agentId: 'ghost', socketId: 's2' }),
      batch.check({ agentId: 'b', socketId: 's3' }),
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
      batch.check({ agentId: 'a', socketId: 's1' }),
      batch.check({ agentId: 'b', socketId: 's2' }),
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
      batch.check({ agentId: 'a', socketId: 's1' }),
      batch.check({ agentId: 'b', socketId: 's2' }),
    ]);
    expect(failed.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    fail = false;
    expect((await batch.check({ agentId: 'a', socketId: 's1' }))?.state).toBe('idle');
  });
});
