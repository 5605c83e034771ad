import { Job, type JobsOptions } from 'bullmq';
import type { TaskJob } from '../queues/queue-registry';

/** How many keys BullMQ's `moveToFinished` script takes (`moveToFinished-14`). */
const MOVE_TO_FINISHED_KEYS = 14;

/**
 * The keys and ARGV of BullMQ's own script, for `completeAtOnce.lua` to run it inside its own.
 * The msgpack-packed arguments (BullMQ packs options) stay Buffers, as BullMQ sends them:
 * re-packing them in Lua from JSON (`cmsgpack.pack(cjson.decode(...))`, issue 7's third pass, to
 * keep ioredis from assembling the command as Buffers) cost Redis 15 to 19 µs per call, more
 * than the hub saved.
 */
export interface BullScriptCall {
  keys: string[];
  args: Array<string | number | Buffer>;
}

/**
 * A job to complete: BullMQ completes a job from its id and options only, so it is not read
 * first. `removeOnComplete` is the retention the task was created with.
 */
export function jobToComplete(
  queue: TaskJob['queue'],
  taskId: string,
  removeOnComplete: JobsOptions['removeOnComplete'],
): TaskJob {
  const job = Job.fromJSON(
    queue as never,
    { id: taskId, name: 'task', data: '{}', opts: {}, timestamp: 0 } as never,
    taskId,
  ) as TaskJob;
  job.opts = { ...job.opts, removeOnComplete };
  return job;
}

/**
 * The keys and ARGV of BullMQ's `moveToFinished` for completing `job` under `token`, built by
 * BullMQ's own argument builder (the one `Job.moveToCompleted` uses), for `completeAtOnce.lua`,
 * which runs BullMQ's script inside its own.
 */
export function moveToCompletedArgs(job: TaskJob, result: unknown, token: string): BullScriptCall {
  const { backend } = job as unknown as {
    backend: {
      moveToCompletedArgs(
        job: TaskJob,
        returnValue: string,
        removeOnComplete: unknown,
        token: string,
        fetchNext: boolean,
      ): Array<string | number | Buffer | undefined>;
    };
  };
  const all = backend.moveToCompletedArgs(
    job,
    JSON.stringify(result ?? null),
    job.opts.removeOnComplete,
    token,
    false,
  );
  return {
    keys: all.slice(0, MOVE_TO_FINISHED_KEYS).map(String),
    args: all
      .slice(MOVE_TO_FINISHED_KEYS)
      .filter((arg): arg is string | number | Buffer => arg !== undefined),
  };
}
