import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES, isAppError } from '@agentcom/shared';
import {
  FLOOD_CLOSE_GRACE_MS,
  FLOOD_COOLDOWN_MS,
  FLOOD_REFUSALS,
  FLOOD_REFUSALS_PER_SECOND,
  FREE_FRAME_BYTES,
  FRAME_BYTES_PER_REFUSAL,
  FloodCooldown,
  RefusalBudget,
  REFUSED_BYTES_PER_REFUSAL,
  acceptedCost,
  dropUpgradedConnection,
  floodCooldownMs,
  inFlightRefusalCost,
  refusalCost,
} from './flood-guard';

describe('RefusalBudget', () => {
  it(`takes ${FLOOD_REFUSALS} refusals at once, then ${FLOOD_REFUSALS_PER_SECOND} a second`, () => {
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    for (let i = 0; i < FLOOD_REFUSALS; i++) expect(budget.spend(0)).toBe(true);
    expect(budget.spend(0)).toBe(false);
    // one more a 1/perSecond later
    const step = 1000 / FLOOD_REFUSALS_PER_SECOND;
    expect(budget.spend(step)).toBe(true);
    expect(budget.spend(step)).toBe(false);
  });

  it('counts a big refused frame by its size: a frame of 2 MiB spends a whole budget at once', () => {
    expect(refusalCost(0)).toBe(1);
    expect(refusalCost(REFUSED_BYTES_PER_REFUSAL - 1)).toBe(1);
    expect(refusalCost(10 * REFUSED_BYTES_PER_REFUSAL)).toBe(11);
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    expect(budget.spend(0, refusalCost(100 * 1024))).toBe(true);
    expect(budget.spend(0, refusalCost(2 * 1024 * 1024))).toBe(false);
  });

  it('never holds more than the burst, however long the connection was quiet', () => {
    const budget = new RefusalBudget(10, 1, 0);
    for (let i = 0; i < 10; i++) expect(budget.spend(3_600_000)).toBe(true);
    expect(budget.spend(3_600_000)).toBe(false);
  });

  it('is never spent by a sidecar refused at its worst during a stall (34 a second)', () => {
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    let spent = 0;
    for (let ms = 0; ms < 3_600_000; ms += 1000 / 34) if (!budget.spend(ms)) spent++;
    expect(spent).toBe(0);
  });
});

describe('the size charge of accepted frames', () => {
  /** The frame of the largest result a sidecar sends: 1 MiB of JSON and its envelope. */
  const LARGEST_RESULT_FRAME = MAX_PAYLOAD_BYTES + 300;

  it('counts nothing up to 64 KiB, then one per KiB: the largest result counts 960', () => {
    expect(acceptedCost('task:complete', 0, FLOOD_REFUSALS)).toBe(0);
    expect(acceptedCost('agent:heartbeat', FREE_FRAME_BYTES, FLOOD_REFUSALS)).toBe(0);
    expect(acceptedCost('task:fail', FREE_FRAME_BYTES + FRAME_BYTES_PER_REFUSAL - 1, 1000)).toBe(0);
    expect(acceptedCost('task:fail', FREE_FRAME_BYTES + FRAME_BYTES_PER_REFUSAL, 1000)).toBe(1);
    expect(acceptedCost('task:complete', LARGEST_RESULT_FRAME, FLOOD_REFUSALS)).toBe(960);
  });

  it('counts nothing for a log batch, whatever its size (its schema bounds it to 100 strings)', () => {
    expect(acceptedCost('task:log', MAX_MESSAGE_BYTES, FLOOD_REFUSALS)).toBe(0);
  });

  it('takes one largest result at once, closes on a second back to back, takes the next 10 s later', () => {
    const cost = acceptedCost('task:complete', LARGEST_RESULT_FRAME, FLOOD_REFUSALS);
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    expect(budget.spend(0, cost)).toBe(true);
    expect(budget.spend(200, cost)).toBe(false);
    const again = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    expect(again.spend(0, cost)).toBe(true);
    expect(again.spend(10_000, cost)).toBe(true);
  });

  it('never counts more than the whole budget: one frame always passes a full one', () => {
    expect(acceptedCost('task:complete', MAX_MESSAGE_BYTES, 100)).toBe(100);
    expect(new RefusalBudget(100, FLOOD_REFUSALS_PER_SECOND, 0).spend(0, 100)).toBe(true);
    expect(acceptedCost('task:complete', MAX_MESSAGE_BYTES, FLOOD_REFUSALS)).toBe(FLOOD_REFUSALS);
    expect(acceptedCost('task:complete', MAX_MESSAGE_BYTES, 1_000_000)).toBe(1984);
  });

  it('is never spent by a sidecar reporting the largest result every 10 s, with its logs, for an hour', () => {
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    let closed = 0;
    for (let ms = 0; ms < 3_600_000; ms += 250) {
      const log = acceptedCost('task:log', MAX_MESSAGE_BYTES, FLOOD_REFUSALS);
      if (!budget.spend(ms, log)) closed++;
      if (ms % 10_000 === 0) {
        const result = acceptedCost('task:complete', LARGEST_RESULT_FRAME, FLOOD_REFUSALS);
        if (!budget.spend(ms, result)) closed++;
      }
    }
    expect(closed).toBe(0);
  });

  it('counts an event refused beyond the in-flight limit one, and its size beyond 64 KiB, log batch or not', () => {
    expect(inFlightRefusalCost(0, FLOOD_REFUSALS)).toBe(1);
    expect(inFlightRefusalCost(FREE_FRAME_BYTES, FLOOD_REFUSALS)).toBe(1);
    expect(inFlightRefusalCost(FREE_FRAME_BYTES + 10 * FRAME_BYTES_PER_REFUSAL, 1000)).toBe(11);
    expect(inFlightRefusalCost(MAX_MESSAGE_BYTES, FLOOD_REFUSALS)).toBe(FLOOD_REFUSALS);
  });
});

describe('FloodCooldown', () => {
  const refusal = (check: () => void): string | undefined => {
    try {
      check();
      return undefined;
    } catch (err) {
      return isAppError(err) ? `${err.code} ${err.message}` : String(err);
    }
  };

  it('refuses the handshakes naming a cooling agent E_RATE_LIMITED until its cooldown is over', () => {
    const cooldown = new FloodCooldown();
    cooldown.start('flooder', 0);
    expect(refusal(() => cooldown.check({ agentId: 'flooder' }, 1))).toBe(
      `E_RATE_LIMITED this agent's connection was closed for flooding; retry in ${FLOOD_COOLDOWN_MS / 1000} s`,
    );
    expect(refusal(() => cooldown.check({ agentId: 'other' }, 1))).toBeUndefined();
    expect(
      refusal(() => cooldown.check({ agentId: 'flooder' }, FLOOD_COOLDOWN_MS)),
    ).toBeUndefined();
  });

  it('lasts as long as the budget takes to fill up again: 10 s for the default, 20 s for twice that', () => {
    expect(FLOOD_COOLDOWN_MS).toBe(10_000);
    expect(floodCooldownMs(2 * FLOOD_REFUSALS)).toBe(20_000);
    expect(floodCooldownMs(100)).toBe(1000);
  });

  it('lets any other handshake through to the usual checks', () => {
    const cooldown = new FloodCooldown(1000);
    cooldown.start('flooder', 0);
    for (const auth of [undefined, null, 'flooder', 7, {}, { agentId: 7 }, ['flooder']]) {
      expect(refusal(() => cooldown.check(auth, 1))).toBeUndefined();
    }
  });
});

describe('dropUpgradedConnection', () => {
  afterEach(() => jest.useRealTimers());

  const request = (headers: IncomingHttpHeaders): { request: IncomingMessage; tcp: Socket } => {
    const tcp = new Socket();
    return { request: { headers, socket: tcp } as unknown as IncomingMessage, tcp };
  };

  it(`destroys the TCP connection of a WebSocket upgrade ${FLOOD_CLOSE_GRACE_MS} ms later, whatever its closing handshake`, () => {
    jest.useFakeTimers();
    const { request: upgrade, tcp } = request({ upgrade: 'WebSocket', connection: 'Upgrade' });
    dropUpgradedConnection(upgrade);
    jest.advanceTimersByTime(FLOOD_CLOSE_GRACE_MS - 1);
    expect(tcp.destroyed).toBe(false);
    jest.advanceTimersByTime(1);
    expect(tcp.destroyed).toBe(true);
  });

  it('leaves alone the connection of a request that is no WebSocket upgrade (a keep-alive one a proxy may share)', () => {
    jest.useFakeTimers();
    for (const headers of [{}, { connection: 'keep-alive' }, { upgrade: 'h2c' }]) {
      const { request: polling, tcp } = request(headers);
      dropUpgradedConnection(polling, 0);
      expect(jest.getTimerCount()).toBe(0);
      jest.runAllTimers();
      expect(tcp.destroyed).toBe(false);
    }
  });
});
