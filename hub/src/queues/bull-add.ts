import { Job, type JobsOptions, type Queue } from 'bullmq';
import { toBullScriptCall, type BullScriptCall } from './bull-script-call';

/** How many keys BullMQ's `addStandardJob` script takes (`addStandardJob-9`). */
const ADD_STANDARD_JOB_KEYS = 9;

/** A plain job: no delay, no priority, no parent (BullMQ adds it with `addStandardJob`). */
export function isStandardJob(opts: JobsOptions): boolean {
  return !(typeof opts.delay === 'number' && opts.delay > 0) && !opts.priority && !opts.parent;
}

/**
 * Adds a plain job the way `Queue.add` does (the queue's default options merged in, BullMQ's
 * own option checks and argument builder), except that BullMQ's `addStandardJob` script is
 * handed to `run` as a {@link BullScriptCall} to run inside another script (`addThenClaim`).
 * `run` answers what the script answered: the job's id (an earlier one's for a duplicate
 * idempotency key), or an error code below 0, which BullMQ turns into its own error here.
 * Returns the job's id.
 */
export async function addStandardJob(
  queue: Queue,
  name: string,
  data: unknown,
  opts: JobsOptions & { jobId: string },
  run: (call: BullScriptCall) => Promise<string | number>,
): Promise<string> {
  if (!isStandardJob(opts)) throw new Error('addStandardJob: not a plain job');
  const merged = { ...(queue.defaultJobOptions as JobsOptions), ...opts };
  const job = new Job(queue, name, data, merged, merged.jobId) as Job & {
    validateOptions(json: unknown): void;
    backend: {
      addJobToTransaction(
        client: unknown,
        json: unknown,
        jobId: string | undefined,
        parentKeyOpts: { parentKey?: string; parentDependenciesKey: string },
      ): Promise<string | number>;
    };
  };
  const json = job.asJSON();
  job.validateOptions(json);
  // BullMQ builds the arguments and calls `runCommand` on the client it is given
  const client = {
    runCommand: async (
      command: string,
      args: Array<string | number | Buffer | undefined>,
    ): Promise<string | number> => {
      if (!command.startsWith('addStandardJob:')) {
        throw new Error(`addStandardJob: BullMQ asked for ${command}`);
      }
      return run(toBullScriptCall(args, ADD_STANDARD_JOB_KEYS));
    },
  };
  const id = await job.backend.addJobToTransaction(client, json, job.id, {
    parentDependenciesKey: '',
  });
  return String(id);
}
