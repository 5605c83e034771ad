import { EventEmitter, once } from 'node:events';
import {
  AGENT_NAMESPACE,
  PROTOCOL_VERSION,
  type Ack,
  type ClientToServerEvents,
  type CurrentAssignment,
  type ServerToClientEvents,
  type TaskAssign,
  type TaskCancel,
  type TaskFail,
} from '@agentcom/shared';
import { io, type Socket } from 'socket.io-client';
import { api } from './hub';

/**
 * A protocol-level agent for integration tests: a real socket.io-client speaking the real
 * protocol, driven step by step by the test (the real sidecar is tested in e2e).
 */
export class TestAgent extends EventEmitter {
  socket: Socket<ServerToClientEvents, ClientToServerEvents>;
  readonly assignments: TaskAssign[] = [];
  /**
   * Pushes that came while {@link register} awaited its heartbeat (a task already waiting is
   * handed out by the connect): the next ones {@link nextAssignment} answers, as they came before
   * the caller could listen.
   */
  private readonly pushedDuringRegister: TaskAssign[] = [];
  readonly cancels: TaskCancel[] = [];
  current: CurrentAssignment | undefined;

  constructor(
    readonly hubUrl: string,
    readonly agentId: string,
    readonly token: string,
    readonly queues: string[] = ['default'],
    extraAuth: Record<string, unknown> = {},
  ) {
    super();
    this.socket = io(`${hubUrl}${AGENT_NAMESPACE}`, {
      transports: ['websocket'],
      reconnection: false,
      autoConnect: false,
      auth: (cb) =>
        cb({
          agentId,
          token,
          protocol: PROTOCOL_VERSION,
          queues,
          sidecarVersion: 'test',
          ...(this.current ? { current: this.current } : {}),
          ...extraAuth,
        }),
    });
    this.socket.on('task:assign', (msg) => {
      this.assignments.push(msg);
      this.emit('assign', msg);
    });
    this.socket.on('task:cancel', (msg) => {
      this.cancels.push(msg);
      this.emit('cancel', msg);
    });
  }

  /**
   * Registers the agent through the API and returns a TestAgent whose connection the hub has
   * recorded ({@link recorded}).
   */
  static async register(
    hubUrl: string,
    agentId: string,
    queues: string[] = ['default'],
  ): Promise<TestAgent> {
    const created = await api<{ token: string }>(hubUrl, 'POST', '/v1/agents', { agentId });
    if (created.status >= 300) throw new Error(`register failed: ${created.status}`);
    const agent = new TestAgent(hubUrl, agentId, created.body.token, queues);
    await agent.connect();
    await agent.recorded();
    agent.pushedDuringRegister.push(...agent.assignments);
    return agent;
  }

  /**
   * Resolves once the hub has recorded this connection: the replica records it after the
   * handshake, so the client's `connect` can come first, and a read of the agent right then finds
   * it `offline` (a drain answers `offline`, the idle count misses it). An event is handled only
   * once the connection is recorded, so the answer to a heartbeat marks it. The heartbeat names
   * the task this agent holds, if any: one that names none says it holds none.
   */
  async recorded(): Promise<void> {
    const held = this.current ? { taskId: this.current.taskId, token: this.current.token } : {};
    const beat = await this.send('agent:heartbeat', held);
    if (!beat.ok) throw new Error(`heartbeat refused: ${JSON.stringify(beat)}`);
  }

  async connect(): Promise<void> {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        this.socket.once('connect', () => resolve());
        this.socket.once('connect_error', (err) => reject(err));
        this.socket.connect();
      }),
      10_000,
      'connect',
    );
  }

  /** Closes this connection and opens a new one to `hubUrl` (another replica), same identity. */
  async reconnectTo(hubUrl: string): Promise<TestAgent> {
    this.socket.disconnect();
    const next = new TestAgent(hubUrl, this.agentId, this.token, this.queues);
    next.current = this.current;
    await next.connect();
    return next;
  }

  nextAssignment(timeoutMs = 10_000): Promise<TaskAssign> {
    const early = this.pushedDuringRegister.shift();
    if (early) return Promise.resolve(early);
    return withTimeout(
      once(this, 'assign').then(([msg]) => msg as TaskAssign),
      timeoutMs,
      'task:assign',
    );
  }

  /**
   * The push of `taskId` (of its `attempt`, when given), whether it came already or comes within
   * `timeoutMs`. For a test that learns the task's id from the API's answer, which the push can
   * beat: {@link nextAssignment}, called after that answer, would wait for the push after it.
   */
  async assignmentOf(taskId: string, attempt?: number, timeoutMs = 10_000): Promise<TaskAssign> {
    const matches = (msg: TaskAssign): boolean =>
      msg.task.id === taskId && (attempt === undefined || msg.attempt === attempt);
    const came = this.assignments.find(matches);
    if (came) {
      // handed out here: nextAssignment does not hand it out again
      const early = this.pushedDuringRegister.indexOf(came);
      if (early >= 0) this.pushedDuringRegister.splice(early, 1);
      return came;
    }
    let listener: ((msg: TaskAssign) => void) | undefined;
    try {
      return await withTimeout(
        new Promise<TaskAssign>((resolve) => {
          listener = (msg) => {
            if (matches(msg)) resolve(msg);
          };
          this.on('assign', listener);
        }),
        timeoutMs,
        `task:assign of ${taskId}${attempt === undefined ? '' : `, attempt ${attempt}`}`,
      );
    } finally {
      if (listener) this.off('assign', listener);
    }
  }

  async send<E extends keyof ClientToServerEvents>(
    event: E,
    payload: unknown,
  ): Promise<Ack<Record<string, unknown>>> {
    const emit = this.socket.timeout(5000).emitWithAck as unknown as (
      event: string,
      payload: unknown,
    ) => Promise<Ack<Record<string, unknown>>>;
    return emit.call(this.socket.timeout(5000), event, payload);
  }

  async accept(msg: TaskAssign): Promise<Ack<Record<string, unknown>>> {
    this.current = { taskId: msg.task.id, token: msg.token, state: 'working' };
    return this.send('task:accept', { taskId: msg.task.id, token: msg.token });
  }

  async complete(msg: TaskAssign, result: unknown): Promise<Ack<Record<string, unknown>>> {
    const ack = await this.send('task:complete', { taskId: msg.task.id, token: msg.token, result });
    if (ack.ok) this.current = undefined;
    return ack;
  }

  /** Reports the assignment failed (`task:fail`): `{error, retryable, kind?, rateLimitedUntil?}`. */
  async fail(
    msg: TaskAssign,
    failure: Omit<TaskFail, 'taskId' | 'token'>,
  ): Promise<Ack<Record<string, unknown>>> {
    const ack = await this.send('task:fail', { taskId: msg.task.id, token: msg.token, ...failure });
    if (ack.ok) this.current = undefined;
    return ack;
  }

  close(): void {
    this.socket.disconnect();
  }

  /** Resolves with the reason once this connection closes (listen before what closes it). */
  disconnected(): Promise<string> {
    return new Promise((resolve) => this.socket.once('disconnect', (reason) => resolve(reason)));
  }
}

export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
