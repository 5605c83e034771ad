import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { isAppError } from '@agentcom/shared';
import {
  FLOOD_CLOSE_GRACE_MS,
  FLOOD_COOLDOWN_MS,
  FLOOD_REFUSALS,
  FLOOD_REFUSALS_PER_SECOND,
  FloodCooldown,
  RefusalBudget,
  REFUSED_BYTES_PER_REFUSAL,
  dropUpgradedConnection,
  floodCooldownMs,
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
