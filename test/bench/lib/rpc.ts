import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Proc } from './procs';
import { BENCH_DIR, errorMessage } from './util';

/** Commands of a child process: name → [arguments, result]. */
export type RpcSpec = Record<string, [unknown, unknown]>;

interface CallMessage {
  kind: 'call';
  id: number;
  cmd: string;
  args: unknown;
}
interface ReplyMessage {
  kind: 'reply';
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

/** The parent's side: a forked bundle of `.tmp/bench/` answering commands over IPC. */
export class RpcChild<S extends RpcSpec> {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (err: Error) => void }
  >();
  readonly proc: Proc;

  private constructor(
    name: string,
    readonly child: ChildProcess,
  ) {
    this.proc = new Proc(name, child);
    child.on('message', (raw: unknown) => {
      const msg = raw as ReplyMessage;
      if (msg?.kind !== 'reply') return;
      const waiter = this.pending.get(msg.id);
      if (!waiter) return;
      this.pending.delete(msg.id);
      if (msg.ok) waiter.resolve(msg.result);
      else waiter.reject(new Error(msg.error ?? 'failed'));
    });
    child.once('exit', (code, signal) => {
      for (const waiter of this.pending.values()) {
        waiter.reject(
          new Error(
            `${name} exited (${code ?? signal ?? '?'}) before answering:\n${this.proc.tail()}`,
          ),
        );
      }
      this.pending.clear();
    });
  }

  /** Forks `.tmp/bench/<bundle>.js`. */
  static fork<S extends RpcSpec>(
    name: string,
    bundle: string,
    options: { execArgv?: string[]; env?: Record<string, string> } = {},
  ): RpcChild<S> {
    const child = fork(join(BENCH_DIR, `${bundle}.js`), [], {
      execArgv: options.execArgv ?? [],
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    return new RpcChild<S>(name, child);
  }

  get pid(): number {
    return this.proc.pid;
  }

  call<K extends keyof S & string>(cmd: K, args: S[K][0], timeoutMs = 120_000): Promise<S[K][1]> {
    const id = this.nextId++;
    return new Promise<S[K][1]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.proc.name}: ${cmd} not answered within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as S[K][1]);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
      const message: CallMessage = { kind: 'call', id, cmd, args };
      this.child.send(message);
    });
  }

  async close(): Promise<void> {
    await this.proc.stop('SIGKILL');
  }
}

/** The child's side: answers the parent's commands; exits when the parent goes away. */
export function serveRpc<S extends RpcSpec>(handlers: {
  [K in keyof S]: (args: S[K][0]) => Promise<S[K][1]>;
}): void {
  if (!process.send) throw new Error('serveRpc: not started with an IPC channel');
  process.on('disconnect', () => process.exit(0));
  process.on('message', (raw: unknown) => {
    const msg = raw as CallMessage;
    if (msg?.kind !== 'call') return;
    const handler = (handlers as Record<string, (args: unknown) => Promise<unknown>>)[msg.cmd];
    const reply = (payload: Omit<ReplyMessage, 'kind' | 'id'>): void => {
      const message: ReplyMessage = { kind: 'reply', id: msg.id, ...payload };
      process.send?.(message);
    };
    if (!handler) {
      reply({ ok: false, error: `unknown command ${msg.cmd}` });
      return;
    }
    handler(msg.args).then(
      (result) => reply({ ok: true, result }),
      (err: unknown) => reply({ ok: false, error: errorMessage(err) }),
    );
  });
}
