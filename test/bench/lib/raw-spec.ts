/** The commands of the raw BullMQ baseline process (`raw-bullmq.ts`). */
export type RawSpec = {
  open: [
    { redisPort: number; prefix: string; concurrency: number; recordStarts?: boolean },
    Record<string, never>,
  ];
  /**
   * Adds `n` jobs with `inflight` adds at a time while the worker runs them (with `batch`, each
   * add is a `Queue.addBulk` of that many); resolves when all completed.
   */
  produce: [
    { n: number; inflight: number; timeoutMs: number; batch?: number },
    {
      ms: number;
      addMs: number;
      completed: number;
      reached: boolean;
      tasksPerSec: number;
      cpuMs: number;
    },
  ];
  /** Adds jobs at a steady rate; per job: `Queue.add` called → processor started (ms). */
  steady: [
    { rate: number; durationMs: number; warmupMs: number },
    { addToStart: number[]; missing: number; submitted: number; achievedRate: number },
  ];
  close: [Record<string, never>, Record<string, never>];
};
