import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import {
  MAX_MESSAGE_BYTES,
  MAX_PAYLOAD_BYTES,
  isAppError,
  type HeartbeatAck,
  type ReportAck,
} from '@agentcom/shared';
import {
  FLOOD_CLOSE_GRACE_MS,
  FLOOD_COOLDOWN_MS,
  FLOOD_REFUSALS,
  FLOOD_REFUSALS_PER_SECOND,
  FloodCooldown,
  HANDLING_COST,
  RefusalBudget,
  REFUSED_BYTES_PER_REFUSAL,
  TRANSPORT_BYTES_PER_REFUSAL,
  WORK_CEILING_MS,
  WASTED_ANSWER_COST,
  WORK_MS_PER_REFUSAL,
  acceptedCost,
  answerCost,
  dropUpgradedConnection,
  floodCooldownMs,
  inFlightRefusalCost,
  refusalCost,
  workCeilingMs,
  workCost,
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

describe('the work charge of a frame', () => {
  const KiB = 1024;
  /** The frame of the largest result a sidecar sends: 1 MiB of JSON and its envelope. */
  const LARGEST_RESULT_FRAME = MAX_PAYLOAD_BYTES + 300;

  /**
   * Spends `frame` back to back (the clock moving on by each frame's work, as a replica busy with
   * nothing else) until the budget refuses one; returns the work taken and the frames answered.
   */
  const floodUntilClosed = (frame: {
    bytes: number;
    workMs: number;
  }): { workMs: number; frames: number } => {
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    let now = 0;
    let frames = 0;
    for (;;) {
      now += frame.workMs;
      if (!budget.spend(now, workCost(frame.bytes, frame.workMs, budget.burst))) break;
      frames++;
    }
    return { workMs: frames * frame.workMs, frames };
  };

  it('counts one refusal per 32 KiB of frame and one per 0.25 ms of its decoding and schema check', () => {
    expect(TRANSPORT_BYTES_PER_REFUSAL).toBe(32 * KiB);
    expect(WORK_MS_PER_REFUSAL).toBe(0.25);
    expect(workCost(0, 0, FLOOD_REFUSALS)).toBe(0);
    expect(workCost(32 * KiB, 0, FLOOD_REFUSALS)).toBe(1);
    expect(workCost(2 * 32 * KiB, 10, FLOOD_REFUSALS)).toBe(2 + 40);
    // a clock that went backwards counts nothing, never less than nothing
    expect(workCost(32 * KiB, -5, FLOOD_REFUSALS)).toBe(1);
  });

  it('counts the small frames of expensive shapes their decoding, where they counted nothing under 64 KiB', () => {
    // measured decoding and schema check of 64 KiB (see WORK_MS_PER_REFUSAL): nested 63 deep,
    // `{}`, zeros, one string, a log batch
    const measured = { nested: 10, empties: 5, zeros: 1.4, string: 0.5, logBatch: 0.1 };
    const cost = (ms: number): number => workCost(64 * KiB, ms, FLOOD_REFUSALS);
    expect(cost(measured.nested)).toBe(2 + 40);
    expect(cost(measured.empties)).toBe(2 + 20);
    expect(cost(measured.zeros)).toBeCloseTo(2 + 5.6, 9);
    expect(cost(measured.string)).toBe(2 + 2);
    expect(cost(measured.logBatch)).toBeCloseTo(2 + 0.4, 9);
  });

  it('bounds the timed work by its size: a pause while a small frame was decoded counts at most half a refusal', () => {
    expect(workCeilingMs(0)).toBe(WORK_CEILING_MS);
    expect(workCeilingMs(KiB)).toBe(WORK_CEILING_MS + WORK_MS_PER_REFUSAL);
    // a heartbeat, an accept, a no-op result: a couple of hundred bytes, whatever the timer says
    // (a garbage collection, a process waiting for a core, a VM paused for seconds)
    for (const bytes of [30, 120, 250]) {
      expect(workCost(bytes, 5000, FLOOD_REFUSALS)).toBeLessThanOrEqual(0.5);
      expect(workCost(bytes, 5000, FLOOD_REFUSALS)).toBeCloseTo(
        bytes / TRANSPORT_BYTES_PER_REFUSAL + workCeilingMs(bytes) / WORK_MS_PER_REFUSAL,
        9,
      );
    }
    // 64 KiB: 16.05 ms at most, a refusal a KiB, about what it would count refused
    expect(workCost(64 * KiB, 5000, FLOOD_REFUSALS)).toBeCloseTo(2 + 64.2, 9);
    expect(refusalCost(64 * KiB)).toBe(65);
  });

  it('never counts more than the whole budget: one frame always passes a full one', () => {
    expect(workCost(MAX_MESSAGE_BYTES, 1e6, 100)).toBe(100);
    expect(new RefusalBudget(100, FLOOD_REFUSALS_PER_SECOND, 0).spend(0, 100)).toBe(true);
    expect(workCost(MAX_MESSAGE_BYTES, 1e6, FLOOD_REFUSALS)).toBe(FLOOD_REFUSALS);
    expect(workCost(MAX_MESSAGE_BYTES, 1e6, 1_000_000)).toBeCloseTo(64 + 2048.2, 6);
  });

  it('closes a flood of frames of any shape within ~256 ms of their work (250 at once, then 25 a second)', () => {
    // frames sent back to back: the work taken before the close is the burst's 250 ms and what
    // the refill adds meanwhile (2.5% of it), whatever their size or the time each takes
    const shapes = [
      { bytes: 60 * KiB, workMs: 10 }, // 60 KiB nested 63 deep
      { bytes: 4 * KiB, workMs: 0.7 }, // 4 KiB of `{}`
      { bytes: 60 * KiB, workMs: 14 }, // slower than anything measured, under the ceiling
      { bytes: 2 * 1024 * KiB, workMs: 250 }, // a log batch whose duplicated `lines` holds `{}`
      { bytes: 1024 * KiB, workMs: 5 }, // big and cheap: its size counts
    ];
    for (const shape of shapes) {
      const { workMs, frames } = floodUntilClosed(shape);
      expect({ shape, workMs: Math.min(workMs, 257) }).toEqual({ shape, workMs });
      expect(frames).toBeLessThan(1000);
    }
  });

  it('holds a connection sending expensive small frames at the refill rate to 25 ms of work a second', () => {
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    const frame = { bytes: 60 * KiB, workMs: 10 };
    let work = 0;
    // as many as the budget takes, each at the first moment it takes one, for a minute
    for (let ms = 0; ms < 60_000; ms += 1) {
      while (budget.spend(ms, workCost(frame.bytes, frame.workMs, budget.burst)))
        work += frame.workMs;
    }
    expect(work).toBeLessThanOrEqual(250 + 60 * 25);
    expect(work).toBeGreaterThan(60 * 20);
  });

  it('is never spent by 100 small events a second, each counted its ceiling and its handling, for an hour', () => {
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    let closed = 0;
    for (let ms = 0; ms < 3_600_000; ms += 10) {
      if (!budget.spend(ms, acceptedCost(250, Infinity, FLOOD_REFUSALS))) closed++;
    }
    expect(closed).toBe(0);
  });

  it('is never spent by a sidecar streaming 1 MiB of log lines a second, with the largest result every 20 s, for an hour', () => {
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    // 100 batches a second of 100 lines of 100 bytes, each decoded at twice the measured 2 µs a
    // KiB (~0.59 each with its handling: ~59 a second); the result of 1 MiB of `{}` at ~110 ms
    // (its slowest measured shape but nesting: ~472). Every 10 s as well, it would spend ~106 a
    // second, over the refill: the handling of 100 batches a second counts ~10 of it
    const logBatch = 100 * 105 + 80;
    const batchCost = acceptedCost(logBatch, (logBatch / KiB) * 0.004, FLOOD_REFUSALS);
    const resultCost = acceptedCost(LARGEST_RESULT_FRAME, 110, FLOOD_REFUSALS);
    expect(100 * batchCost + resultCost / 20).toBeLessThan(0.85 * FLOOD_REFUSALS_PER_SECOND);
    let closed = 0;
    for (let ms = 0; ms < 3_600_000; ms += 10) {
      if (!budget.spend(ms, batchCost)) closed++;
      if (ms % 20_000 === 0 && !budget.spend(ms, resultCost)) closed++;
    }
    expect(closed).toBe(0);
  });

  it('takes one largest result of the slowest shape at once, closes on a second back to back', () => {
    // 1 MiB nested 63 deep: ~160 ms to decode and check
    const cost = workCost(LARGEST_RESULT_FRAME, 160, FLOOD_REFUSALS);
    expect(cost).toBeCloseTo(32 + 640, 0);
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    expect(budget.spend(0, cost)).toBe(true);
    expect(budget.spend(200, cost)).toBe(false);
    const again = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    expect(again.spend(0, cost)).toBe(true);
    expect(again.spend(7000, cost)).toBe(true);
  });

  it('counts an event refused beyond the in-flight limit one, or the work of its frame when more', () => {
    expect(inFlightRefusalCost(0, 0, FLOOD_REFUSALS)).toBe(1);
    // a heartbeat, a log batch of 10 KiB: one, as before
    expect(inFlightRefusalCost(100, 0.02, FLOOD_REFUSALS)).toBe(1);
    expect(inFlightRefusalCost(10 * KiB, 0.05, FLOOD_REFUSALS)).toBe(1);
    // 60 KiB of nesting decoded (its schema never ran): its work, where it counted one
    expect(inFlightRefusalCost(64 * KiB, 10, FLOOD_REFUSALS)).toBe(42);
    expect(inFlightRefusalCost(MAX_MESSAGE_BYTES, 1e6, FLOOD_REFUSALS)).toBe(FLOOD_REFUSALS);
  });
});

describe('the handling charge of an accepted event', () => {
  /** A heartbeat's frame and its measured decoding and schema check (~0.04 of a refusal). */
  const HEARTBEAT = { bytes: 120, workMs: 0.01 };
  const superseded = {
    ok: false,
    code: 'E_ASSIGNMENT_SUPERSEDED',
    message: 'The assignment of task a is no longer current',
  } as const;

  /**
   * Sends events at `perSecond` for up to `seconds`, each counted `cost`, until the budget
   * refuses one; the events taken, and whether the connection was closed.
   */
  const sendAtRate = (
    perSecond: number,
    seconds: number,
    cost: number,
  ): { taken: number; closed: boolean } => {
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    const count = perSecond * seconds;
    for (let i = 0; i < count; i++) {
      if (!budget.spend((i * 1000) / perSecond, cost)) return { taken: i, closed: true };
    }
    return { taken: count, closed: false };
  };

  it('counts every accepted event 0.1 more than the work of its frame, never more than the whole budget', () => {
    expect(HANDLING_COST).toBe(0.1);
    expect(acceptedCost(0, 0, FLOOD_REFUSALS)).toBe(HANDLING_COST);
    expect(acceptedCost(32 * 1024, 0.25, FLOOD_REFUSALS)).toBeCloseTo(2.1, 9);
    expect(acceptedCost(HEARTBEAT.bytes, HEARTBEAT.workMs, FLOOD_REFUSALS)).toBeCloseTo(
      HANDLING_COST + workCost(HEARTBEAT.bytes, HEARTBEAT.workMs, FLOOD_REFUSALS),
      9,
    );
    expect(acceptedCost(MAX_MESSAGE_BYTES, 1e6, 100)).toBe(100);
  });

  it('holds one connection to 1,000 events a second sustained, whatever their frames, 10,000 at once', () => {
    const burst = FLOOD_REFUSALS / HANDLING_COST;
    const perSecond = FLOOD_REFUSALS_PER_SECOND / HANDLING_COST;
    expect(burst).toBe(10_000);
    expect(perSecond).toBe(1000);
    // as many as the budget takes, each at the first moment it takes one, for a minute (or until
    // more than it should have were taken: events that counted nothing would be taken for ever)
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    const most = burst + 60 * perSecond + 1;
    let events = 0;
    for (let ms = 0; ms <= 60_000 && events <= most; ms += 1) {
      while (events <= most && budget.spend(ms, acceptedCost(0, 0, budget.burst))) events++;
    }
    expect(events).toBeLessThanOrEqual(most);
    expect(events).toBeGreaterThan(burst + 60 * perSecond - 100);
  });

  it('closes a connection sending 2,000 heartbeats a second within ~11,000, where the work of their frames alone kept it for ever', () => {
    const work = workCost(HEARTBEAT.bytes, HEARTBEAT.workMs, FLOOD_REFUSALS);
    const handled = acceptedCost(HEARTBEAT.bytes, HEARTBEAT.workMs, FLOOD_REFUSALS);
    expect(sendAtRate(2000, 600, work)).toEqual({ taken: 1_200_000, closed: false });
    const flood = sendAtRate(2000, 600, handled);
    expect(flood.closed).toBe(true);
    // the burst, and what the refill adds meanwhile: 1,000 / (2,000 × ~0.14 - 100) s
    expect(flood.taken).toBeGreaterThan(10_000);
    expect(flood.taken).toBeLessThan(11_000);
  });

  it("counts an event answered with an error of the agent's making one more: a flood of them is closed within ~900, however fast", () => {
    expect(WASTED_ANSWER_COST).toBe(1);
    const cost =
      acceptedCost(HEARTBEAT.bytes, HEARTBEAT.workMs, FLOOD_REFUSALS) + answerCost(superseded);
    expect(cost).toBeCloseTo(1.14, 2);
    for (const perSecond of [1000, 10_000, 100_000]) {
      const flood = sendAtRate(perSecond, 60, cost);
      expect(flood.closed).toBe(true);
      expect(flood.taken).toBeGreaterThan(850);
      expect(flood.taken).toBeLessThan(1000);
    }
  });

  it('counts nothing more for an answer that is ok, or a failure of the replica the agent is told to retry', () => {
    expect(answerCost({ ok: true })).toBe(0);
    const abort: HeartbeatAck = { ok: true, state: 'idle', abort: true };
    const duplicate: ReportAck = { ok: true, duplicate: true };
    expect(answerCost(abort)).toBe(0);
    expect(answerCost(duplicate)).toBe(0);
    for (const code of ['E_ASSIGNMENT_SUPERSEDED', 'E_VALIDATION', 'E_UNAUTHORIZED'] as const) {
      expect(answerCost({ ok: false, code, message: '' })).toBe(WASTED_ANSWER_COST);
    }
    for (const code of ['E_UNAVAILABLE', 'E_INTERNAL', 'E_RATE_LIMITED'] as const) {
      expect(answerCost({ ok: false, code, message: '' })).toBe(0);
    }
  });

  it("is never spent by a benchmark agent at twice the throughput benchmark's peak: 200 tasks a second (an accept and a complete each) and its heartbeats, for an hour", () => {
    // 10,000 tasks a second over 100 agents is 100 each; frames of ~250 bytes decoded and
    // checked in ~12 µs, and one in a hundred counted its ceiling (a GC or a wait for a core)
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    let closed = 0;
    let event = 0;
    for (let ms = 0; ms < 3_600_000; ms += 2.5) {
      const workMs = ++event % 100 === 0 ? Infinity : 0.012;
      if (!budget.spend(ms, acceptedCost(250, workMs, FLOOD_REFUSALS))) closed++;
      if (ms % 5000 === 0 && !budget.spend(ms, acceptedCost(HEARTBEAT.bytes, 0.01, 1000))) closed++;
    }
    expect(event).toBe(400 * 3600);
    expect(closed).toBe(0);
  });

  it('is never spent by a sidecar whose reports and log batches come late: a hundred stale reports after a reconnect, then a refused batch every 250 ms, for an hour', () => {
    const budget = new RefusalBudget(FLOOD_REFUSALS, FLOOD_REFUSALS_PER_SECOND, 0);
    const report = acceptedCost(300, 0.02, FLOOD_REFUSALS) + answerCost(superseded);
    for (let i = 0; i < 100; i++) expect(budget.spend(i, report)).toBe(true);
    const logBatch = 100 * 105 + 80;
    const lateBatch =
      acceptedCost(logBatch, (logBatch / 1024) * 0.004, FLOOD_REFUSALS) + answerCost(superseded);
    let closed = 0;
    for (let ms = 100; ms < 3_600_000; ms += 250) if (!budget.spend(ms, lateBatch)) closed++;
    expect(closed).toBe(0);
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
