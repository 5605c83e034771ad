import { once, EventEmitter } from 'node:events';
import { createLogger } from '../logger';
import { DisconnectRetries } from './disconnect-retries';

/**
 * A recorder that Redis "refuses" `refusals` times, then takes: each try is an event, so a test
 * awaits the tries instead of sleeping.
 */
function refusingRecorder(refusals: number) {
  const tries = new EventEmitter();
  const calls: Array<[string, string]> = [];
  const record = async (agentId: string, socketId: string): Promise<void> => {
    calls.push([agentId, socketId]);
    const refused = calls.length <= refusals;
    tries.emit('try', refused);
    if (refused) throw new Error('NOPERM this user has no permissions to access one of the keys');
  };
  return { tries, calls, record };
}

const logger = createLogger({ level: 'silent', hubId: 'test' });

describe('DisconnectRetries', () => {
  it('tries again with backoff until the record is taken, then holds nothing', async () => {
    const recorder = refusingRecorder(2);
    const retries = new DisconnectRetries({ ...recorder, logger, firstRetryMs: 5, maxRetryMs: 20 });
    retries.schedule('a1', 's1');
    expect(retries.size()).toBe(1);
    expect(await once(recorder.tries, 'try')).toEqual([true]); // refused again
    expect(await once(recorder.tries, 'try')).toEqual([true]); // and again
    expect(await once(recorder.tries, 'try')).toEqual([false]); // taken
    expect(recorder.calls).toEqual([
      ['a1', 's1'],
      ['a1', 's1'],
      ['a1', 's1'],
    ]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(retries.size()).toBe(0);
    retries.stop();
  });

  it('keeps one retry per connection however often it is scheduled', async () => {
    const recorder = refusingRecorder(0);
    const retries = new DisconnectRetries({ ...recorder, logger, firstRetryMs: 5 });
    retries.schedule('a1', 's1');
    retries.schedule('a1', 's1');
    retries.schedule('a1', 's2');
    expect(retries.size()).toBe(2);
    await once(recorder.tries, 'try');
    await once(recorder.tries, 'try');
    // a second retry of s1 would have run by now (5 ms, jittered to at most 7.5 ms)
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(recorder.calls.map(([, socketId]) => socketId).sort()).toEqual(['s1', 's2']);
    expect(retries.size()).toBe(0);
  });

  it('drops its retries at stop, and takes none after', async () => {
    const recorder = refusingRecorder(0);
    const retries = new DisconnectRetries({ ...recorder, logger, firstRetryMs: 5 });
    retries.schedule('a1', 's1');
    retries.stop();
    retries.schedule('a2', 's2');
    expect(retries.size()).toBe(0);
    // a due retry would have run by now (5 ms, jittered to at most 7.5 ms)
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(recorder.calls).toEqual([]);
  });
});
