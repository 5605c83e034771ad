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
    expect(retries.size()).toBe(0);
    retries.stop();
  });

  /**
   * Without jitter each retry is due `firstRetryMs` after it was scheduled, and timers of one
   * duration fire in the order they were set: a sentinel scheduled after the retries under test
   * tries after any of them would.
   */
  const even = { logger, firstRetryMs: 5, random: () => 0.5 };

  it('keeps one retry per connection however often it is scheduled', async () => {
    const recorder = refusingRecorder(0);
    const retries = new DisconnectRetries({ ...recorder, ...even });
    retries.schedule('a1', 's1');
    retries.schedule('a1', 's1');
    retries.schedule('a1', 's2');
    expect(retries.size()).toBe(2);
    retries.schedule('a9', 'sentinel');
    for (let i = 0; i < 3; i++) await once(recorder.tries, 'try');
    expect(recorder.calls.map(([, socketId]) => socketId)).toEqual(['s1', 's2', 'sentinel']);
    expect(retries.size()).toBe(0);
  });

  it('drops its retries at stop, and takes none after', async () => {
    const recorder = refusingRecorder(0);
    const retries = new DisconnectRetries({ ...recorder, ...even });
    retries.schedule('a1', 's1');
    retries.stop();
    retries.schedule('a2', 's2');
    expect(retries.size()).toBe(0);
    const sentinel = refusingRecorder(0);
    new DisconnectRetries({ ...sentinel, ...even }).schedule('a9', 'sentinel');
    await once(sentinel.tries, 'try');
    expect(recorder.calls).toEqual([]);
  });
});
