import { SharedSnapshot } from './shared-snapshot';
import type { UiSnapshot, UiTransition } from './ui-events';

/** A read the test ends when it likes: the order of reads, requests and transitions is its own. */
class Reads {
  private readonly pending: Array<{ end: () => void; fail: () => void }> = [];
  count = 0;
  readonly read = (): Promise<UiSnapshot> => {
    const hubId = `read-${++this.count}`;
    return new Promise<UiSnapshot>((resolve, reject) => {
      this.pending.push({
        end: () => resolve({ hubId, serverTime: 0, agents: [], queues: {}, events: [] }),
        fail: () => reject(new Error('redis said no')),
      });
    });
  };
  end(): void {
    this.pending.shift()?.end();
  }
  fail(): void {
    this.pending.shift()?.fail();
  }
}

const batch = (id: string): UiTransition[] => [
  {
    id,
    agent: 'a',
    from: 'idle',
    to: 'draining',
    reason: 'drain',
    task: '',
    hub: 'h',
    version: 1,
    at: 1,
  },
];

describe('SharedSnapshot', () => {
  afterEach(() => jest.useRealTimers());

  it('answers the tabs asking during a read with that read, and those just after it too', async () => {
    const reads = new Reads();
    const shared = new SharedSnapshot({ read: reads.read, reuseMs: 60_000, now: Date.now });
    const asked = [shared.forTab(0), shared.forTab(0), shared.forTab(0)];
    reads.end();
    const answers = await Promise.all(asked);
    const later = await shared.forTab(0);
    expect(reads.count).toBe(1);
    for (const { snapshot } of [...answers, later]) expect(snapshot.hubId).toBe('read-1');
  });

  it('sends a tab the batches handed out between the read and its joining, and no others', async () => {
    const reads = new Reads();
    const shared = new SharedSnapshot({ read: reads.read, reuseMs: 60_000, now: Date.now });
    shared.noteHandedOut(batch('before')); // the read shows it
    const early = shared.forTab(shared.handedOut);
    shared.noteHandedOut(batch('during-1'));
    shared.noteHandedOut(batch('during-2'));
    const joinedAt = shared.handedOut;
    shared.noteHandedOut(batch('after')); // the tab got it live
    const late = shared.forTab(joinedAt);
    reads.end();
    expect((await early).missed).toEqual([]);
    expect((await late).missed.map((t) => t.id)).toEqual(['during-1', 'during-2']);
  });

  it('reads again for a fresh request, after the read under way, once for all who asked', async () => {
    const reads = new Reads();
    const shared = new SharedSnapshot({ read: reads.read, reuseMs: 60_000, now: Date.now });
    const first = shared.forTab(0);
    const fresh = [shared.forTab(0, { fresh: true }), shared.forTab(0, { fresh: true })];
    await Promise.resolve();
    expect(reads.count).toBe(1); // one at a time
    reads.end();
    expect((await first).snapshot.hubId).toBe('read-1');
    await new Promise(setImmediate);
    expect(reads.count).toBe(2);
    reads.end();
    for (const answer of await Promise.all(fresh)) expect(answer.snapshot.hubId).toBe('read-2');
  });

  it('keeps a failed read, and a built one past its window or after forget, for nobody', async () => {
    jest.useFakeTimers();
    const reads = new Reads();
    const shared = new SharedSnapshot({ read: reads.read, reuseMs: 1000, now: Date.now });
    const failing = shared.forTab(0);
    reads.fail();
    await expect(failing).rejects.toThrow('redis said no');

    const built = shared.forTab(0);
    reads.end();
    expect((await built).snapshot.hubId).toBe('read-2');
    jest.advanceTimersByTime(999);
    const within = shared.forTab(0);
    expect((await within).snapshot.hubId).toBe('read-2');
    jest.advanceTimersByTime(1);
    const past = shared.forTab(0);
    reads.end();
    expect((await past).snapshot.hubId).toBe('read-3');

    shared.forget();
    const afterForget = shared.forTab(0);
    reads.end();
    expect((await afterForget).snapshot.hubId).toBe('read-4');
  });
});
