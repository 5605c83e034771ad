import { AGENT_STATES } from '@agentcom/shared';
import { AGENT_TRANSITIONS, canTransition, restingState } from './agent-machine';

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
});
