import { Job, type JobsOptions } from 'bullmq';
import { unpack } from 'msgpackr';
import type { TaskJob } from '../queues/queue-registry';

/** How many keys BullMQ's `moveToFinished` script takes (`moveToFinished-14`). */
const MOVE_TO_FINISHED_KEYS = 14;

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
 * which runs BullMQ's script inside its own. A msgpack-packed argument (BullMQ packs the options)
 * is sent as JSON, its position (1-based) in `packed`, and packed again by the script
 * (`cmsgpack.pack(cjson.decode(...))`, two C calls): one Buffer among the arguments makes ioredis
 * assemble the whole command as Buffers, which cost the hub more than this.
 */
export function moveToCompletedArgs(
  job: TaskJob,
  result: unknown,
  token: string,
): { keys: string[]; args: Array<string | number>; packed: number[] } {
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
  const keys = all.slice(0, MOVE_TO_FINISHED_KEYS).map(String);
  const packed: number[] = [];
  const args = all
    .slice(MOVE_TO_FINISHED_KEYS)
    .filter((arg): arg is string | number | Buffer => arg !== undefined)
    .map((arg, i) => {
      if (!Buffer.isBuffer(arg)) return arg;
      packed.push(i + 1);
      // undefined fields were packed as nil: leaving them out is the same to the script
      return JSON.stringify(unpack(arg), (_, value: unknown) => value ?? undefined);
    });
  return { keys, args, packed };
}
