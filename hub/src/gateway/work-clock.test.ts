import { setTimeout as sleep } from 'node:timers/promises';
import { CPU_TIMED_FRAME_BYTES, startWork, workMsSince } from './work-clock';

describe('the work clock of a frame', () => {
  it('leaves out the time the process did not run, for a frame timed on the CPU clock', async () => {
    const mark = startWork(CPU_TIMED_FRAME_BYTES);
    const wallStart = performance.now();
    // 300 ms in which this process does next to nothing (as one preempted would not run)
    await sleep(300);
    const wallMs = performance.now() - wallStart;
    // a timer is due from the event loop's cached time, which this turn's earlier work made stale:
    // it can fire that much early by performance.now()
    expect(wallMs).toBeGreaterThanOrEqual(250);
    expect(workMsSince(mark)).toBeLessThan(wallMs / 3);
  });

  it('counts work done, up to the wall clock', () => {
    const mark = startWork(64 * 1024);
    // 30 ms of this process's CPU, however long a busy machine takes to give it (10 s at most)
    const cpuStart = process.cpuUsage();
    const giveUpAt = performance.now() + 10_000;
    const spent = () => {
      const { user, system } = process.cpuUsage(cpuStart);
      return (user + system) / 1000;
    };
    // and 30 ms of the wall clock: the CPU clock counts the process's other threads too (V8's
    // GC), so 30 ms of it can pass in less (seen: 22.8 ms), and the work is the lesser of the two
    const wallMs = () => performance.now() - mark.wall;
    while ((spent() < 30 || wallMs() < 30) && performance.now() < giveUpAt);
    const workMs = workMsSince(mark);
    expect(workMs).toBeGreaterThanOrEqual(30);
    expect(workMs).toBeLessThanOrEqual(performance.now() - mark.wall);
  });

  it('times a small frame on the wall clock alone (no system call per heartbeat)', async () => {
    const mark = startWork(CPU_TIMED_FRAME_BYTES - 1);
    expect(mark.cpu).toBeUndefined();
    await sleep(20);
    expect(workMsSince(mark)).toBeGreaterThanOrEqual(15);
  });
});
