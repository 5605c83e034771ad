import { AGENT_STATES } from '@agentcom/shared';
import {
  AGENT_TRANSITIONS,
  ackTimeoutCooldownMs,
  canTransition,
  restingState,
} from './agent-machine';

describe('agent state machine', () => {
  it('walks the whole lifecycle through legal transitions', () => {
    const path = [
      'offline',
      'idle',
      'assigned',
      'working',
      'cooldown',
      'idle',
      'draining',
      'offline',
    ] as const;
    for (let i = 0; i + 1 < path.length; i++) {
      expect(canTransition(path[i]!, path[i + 1]!)).toBe(true);
    }
  });

  it('refuses every transition not in the table', () => {
    const illegal: Array<[string, string]> = [];
    for (const from of AGENT_STATES) {
      for (const to of AGENT_STATES) {
        if (!AGENT_TRANSITIONS[from].includes(to)) illegal.push([from, to]);
        expect(canTransition(from, to)).toBe(AGENT_TRANSITIONS[from].includes(to));
      }
    }
    expect(illegal).toEqual(
      expect.arrayContaining([
        ['offline', 'assigned'],
        ['idle', 'working'],
        ['idle', 'cooldown'],
        ['draining', 'assigned'],
        ['cooldown', 'assigned'],
        ['draining', 'working'],
      ]),
    );
  });

  it('rests in cooldown until its end, then draining if asked, else idle', () => {
    expect(restingState({ drainRequested: true, cooldownUntil: 200, now: 100 })).toBe('cooldown');
    expect(restingState({ drainRequested: true, cooldownUntil: 50, now: 100 })).toBe('draining');
    expect(restingState({ drainRequested: false, cooldownUntil: undefined, now: 100 })).toBe(
      'idle',
    );
  });

  it('rests one ack timeout after a miss, twice as long at each further one, up to the bound', () => {
    const rests = [1, 2, 3, 4, 5, 6, 7].map((missed) =>
      ackTimeoutCooldownMs(missed, 10_000, 300_000),
    );
    expect(rests).toEqual([10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000]);
    expect(ackTimeoutCooldownMs(0, 10_000, 300_000)).toBe(10_000);
    expect(ackTimeoutCooldownMs(10_000, 10_000, 300_000)).toBe(300_000);
  });

  it('never rests less than one ack timeout: a bound at or below it turns the doubling off', () => {
    expect(ackTimeoutCooldownMs(1, 10_000, 0)).toBe(10_000);
    expect(ackTimeoutCooldownMs(5, 10_000, 0)).toBe(10_000);
    expect(ackTimeoutCooldownMs(5, 10_000, 10_000)).toBe(10_000);
    expect(ackTimeoutCooldownMs(2, 600_000, 300_000)).toBe(600_000);
  });
});
