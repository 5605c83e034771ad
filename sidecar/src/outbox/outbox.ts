import { readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../logger';
import { mkdirDurable, removeLeftoverTempFiles, writeFileAtomic } from './atomic-write';
import {
  STATE_FILE_VERSION,
  stateFileSchema,
  type FailReport,
  type HeldTask,
  type Report,
  type StateFile,
  type TaskProcess,
} from './state-schema';
import { errorText } from '../error-text';
import { SIDECAR_VERSION } from '../version';
import { asStateFileError, StateFileError } from './state-file-error';

export const STATE_FILE_NAME = 'state.json';

/** The report written for a task that was `working` when the previous sidecar process died. */
export const INTERRUPTED_ERROR =
  'the sidecar stopped while the task was running; its outcome is unknown';

export interface OpenOptions {
  /**
   * Called with a task left `working` by a dead sidecar process, before it is reported as
   * failed: the place to stop what the task may still run (the hub retries a reported task, so
   * it must not run here any more). Must not reject.
   */
  beforeReportingInterrupted?: (held: HeldTask) => Promise<void>;
}

/**
 * The sidecar's durable state: the task it holds and the reports not yet acknowledged by the hub.
 *
 * Every change is applied in memory, then written with {@link writeFileAtomic}; the returned
 * promise settles when that write is durable. Writes are queued, each writing the whole state as
 * it was when queued, so the file always ends at the latest state. A report is stored before it is
 * sent and removed only once the hub settled it (see the delivery).
 */
export class Outbox {
  private state: StateFile;
  private writes: Promise<void> = Promise.resolve();

  private constructor(
    private readonly path: string,
    state: StateFile,
  ) {
    this.state = state;
  }

  /**
   * Loads `<dir>/state.json` (creating `dir` owner-only if needed). A file that is not JSON or
   * does not match the schema is moved aside to `state.json.corrupt-<epoch ms>` and the sidecar
   * starts empty; a task left `working` by a crashed process becomes a retryable failure report
   * (after {@link OpenOptions.beforeReportingInterrupted}). A file of a newer `version` (written by
   * a newer sidecar) is refused with a {@link StateFileError}, and nothing in `dir` is changed.
   */
  static async open(dir: string, logger: Logger, options: OpenOptions = {}): Promise<Outbox> {
    await mkdirDurable(dir, 0o700);
    const path = join(dir, STATE_FILE_NAME);
    const state = await loadState(path, logger);
    await removeLeftoverTempFiles(path);
    const outbox = new Outbox(path, state);
    const held = outbox.state.current;
    if (held?.state === 'working') {
      await options.beforeReportingInterrupted?.(held);
      logger.warn(
        { taskId: held.taskId },
        'the previous sidecar process stopped while running this task; reporting it as failed',
      );
      await outbox.finishTask({
        type: 'fail',
        taskId: held.taskId,
        token: held.token,
        error: INTERRUPTED_ERROR,
        retryable: true,
        kind: 'error',
      } satisfies FailReport);
    }
    return outbox;
  }

  get current(): HeldTask | undefined {
    return this.state.current;
  }

  /** Undelivered reports, oldest first. */
  get reports(): readonly Report[] {
    return this.state.outbox;
  }

  /** Records a newly assigned task as `working` (replacing a `finished` one). */
  holdTask(task: Omit<HeldTask, 'state'>): Promise<void> {
    this.state = { ...this.state, current: { ...task, state: 'working' } };
    return this.persist();
  }

  /** Records the process of the held `working` task (ignored for any other task or state). */
  recordProcess(ref: TaskRef, process: TaskProcess): Promise<void> {
    const current = this.state.current;
    if (!isSameTask(current, ref) || current.state !== 'working') return this.writes;
    this.state = { ...this.state, current: { ...current, process } };
    return this.persist();
  }

  /**
   * Appends the report and marks its task `finished`, in one durable write. Its process is
   * forgotten: a task's outcome is known only once nothing of it runs.
   */
  finishTask(report: Report): Promise<void> {
    const current = this.state.current;
    this.state = {
      ...this.state,
      current: isSameTask(current, report)
        ? {
            taskId: current.taskId,
            token: current.token,
            attempt: current.attempt,
            state: 'finished',
          }
        : current,
      outbox: [...this.state.outbox, report],
    };
    return this.persist();
  }

  /** Forgets the held task without a report (the hub took it back). */
  dropTask(ref: TaskRef): Promise<void> {
    if (!isSameTask(this.state.current, ref)) return this.writes;
    this.state = { ...this.state, current: undefined };
    return this.persist();
  }

  /** Removes a report the hub settled; the held task is forgotten with its last report. */
  removeReport(report: Report): Promise<void> {
    const outbox = this.state.outbox.filter((stored) => stored !== report);
    const current = this.state.current;
    const settled =
      isSameTask(current, report) &&
      current.state === 'finished' &&
      !outbox.some((other) => isSameTask(current, other));
    this.state = { ...this.state, current: settled ? undefined : current, outbox };
    return this.persist();
  }

  /** Settles when every queued write has been attempted. */
  async idle(): Promise<void> {
    await this.writes.catch(() => undefined);
  }

  private persist(): Promise<void> {
    const text = `${JSON.stringify(this.state)}\n`;
    const write = this.writes.catch(() => undefined).then(() => writeFileAtomic(this.path, text));
    this.writes = write;
    return write;
  }
}

export interface TaskRef {
  taskId: string;
  token: string;
}

/** Whether two references name the same assignment (same task, same fencing token). */
export function sameTask(a: TaskRef, b: TaskRef): boolean {
  return a.taskId === b.taskId && a.token === b.token;
}

function isSameTask(held: HeldTask | undefined, ref: TaskRef): held is HeldTask {
  return held !== undefined && sameTask(held, ref);
}

function emptyState(): StateFile {
  return { version: STATE_FILE_VERSION, outbox: [] };
}

async function loadState(path: string, logger: Logger): Promise<StateFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
    throw asStateFileError(err, path, 'the state file');
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    return moveAside(path, `not JSON (${errorText(err)})`, logger);
  }
  const version = (data as { version?: unknown } | null)?.version;
  if (typeof version === 'number' && version > STATE_FILE_VERSION) {
    // Its reports and task are for a sidecar that can read them: refuse, and leave it as it is.
    throw new StateFileError(
      path,
      'E_NEWER_VERSION',
      `${path} was written by a newer sidecar (state file version ${version}; this sidecar, ` +
        `${SIDECAR_VERSION}, reads version ${STATE_FILE_VERSION}) and may hold undelivered ` +
        'results: upgrade the sidecar back to a version that reads it, or move the file aside ' +
        'to start empty (losing the task and reports it holds)',
    );
  }
  const parsed = stateFileSchema.safeParse(data);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  return moveAside(
    path,
    `${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'does not match the schema'}`,
    logger,
  );
}

/** Moves a corrupt state file aside (`<path>.corrupt-<epoch ms>`) and starts empty. */
async function moveAside(path: string, problem: string, logger: Logger): Promise<StateFile> {
  const aside = `${path}.corrupt-${Date.now()}`;
  await rename(path, aside);
  logger.error(
    { path, movedTo: aside, problem },
    'the state file is corrupt: moved it aside and starting with an empty outbox; ' +
      'undelivered results it held must be recovered by hand',
  );
  return emptyState();
}
