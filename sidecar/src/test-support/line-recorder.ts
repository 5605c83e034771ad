import type { TaskProcess } from '../runner/process-identity';
import type { RunSink } from '../runner/task-runner';

/** Collects a task's log lines and lets a test await the first line matching a pattern. */
export class LineRecorder implements RunSink {
  readonly lines: string[] = [];
  /** Set by a test that wants to hear of the task's process. */
  started: ((process: TaskProcess) => Promise<void> | void) | undefined;
  private waiters: Array<{ pattern: RegExp; resolve: (line: string) => void }> = [];

  log(line: string): void {
    this.lines.push(line);
    this.waiters = this.waiters.filter((waiter) => {
      if (!waiter.pattern.test(line)) return true;
      waiter.resolve(line);
      return false;
    });
  }

  next(pattern: RegExp): Promise<string> {
    const seen = this.lines.find((line) => pattern.test(line));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ pattern, resolve }));
  }
}
