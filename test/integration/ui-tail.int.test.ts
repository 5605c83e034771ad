import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { createLogger } from '../../hub/src/logger';
import { TransitionTailer } from '../../hub/src/ui/transition-tailer';
import { api, eventually } from '../helpers/hub';
import { startRedis } from '../helpers/redis-server';
import { TestAgent, withTimeout } from '../helpers/test-agent';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';
import { UiClient, pageSession } from '../helpers/ui-client';

/**
 * Every command Redis runs, as MONITOR reports it (one `+<time> [<db> <client>] "cmd" "arg" ...`
 * line each), with a way to await the next matching ones. A plain socket: ioredis's monitor mode
 * can mistake a monitor line for the reply of its connection handshake.
 */
class CommandLog {
  readonly lines: string[] = [];
  private waiters: Array<{ match: (line: string) => boolean; resolve: () => void }> = [];
  private buffer = '';

  private constructor(private readonly socket: Socket) {}

  static async start(port: number): Promise<CommandLog> {
    const socket = connect(port, '127.0.0.1');
    const log = new CommandLog(socket);
    const started = new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.on('data', (chunk: Buffer) => {
        log.buffer += chunk.toString('utf8');
        let newline: number;
        while ((newline = log.buffer.indexOf('\r\n')) >= 0) {
          const line = log.buffer.slice(0, newline);
          log.buffer = log.buffer.slice(newline + 2);
          if (line === '+OK') resolve();
          else log.record(line);
        }
      });
    });
    socket.write('MONITOR\r\n');
    await withTimeout(started, 5000, 'MONITOR');
    return log;
  }

  count(match: (line: string) => boolean): number {
    return this.lines.filter(match).length;
  }

  /** Resolves once `n` more commands matching `match` have run. */
  async next(match: (line: string) => boolean, n: number, what: string): Promise<void> {
    for (let i = 0; i < n; i++) {
      await withTimeout(
        new Promise<void>((resolve) => this.waiters.push({ match, resolve })),
        10_000,
        what,
      );
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private record(line: string): void {
    this.lines.push(line);
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) {
      if (waiter.match(line)) waiter.resolve();
      else this.waiters.push(waiter);
    }
  }
}

describe('agents page: the events stream tail', () => {
  let log: CommandLog;
  const clients: UiClient[] = [];
  const fixture = useTestHub({
    beforeClose: () => {
      for (const client of clients.splice(0)) client.close();
      log?.close();
    },
  });
  const { agents } = fixture;
  let hub: TestHub;

  beforeAll(async () => {
    ({ hub } = fixture);
    log = await CommandLog.start(fixture.redis.port);
  });

  /** The command and its arguments of a MONITOR line, each as it was quoted there. */
  const command = (line: string): string[] =>
    (line.slice(line.indexOf('] ') + 2).match(/"(?:[^"\\]|\\.)*"/g) ?? []).map((quoted) =>
      quoted.slice(1, -1),
    );
  /** An XREAD of the events stream: only the tailer reads it that way. */
  const isTailRead = (line: string): boolean => {
    const args = command(line);
    return args[0]?.toLowerCase() === 'xread' && args.includes(hub.keys.events);
  };
  /** The sweeper's liveness refresh of this replica: one every HEARTBEAT_MS / 2 (250 ms here). */
  const isSweep = (line: string): boolean => {
    const args = command(line);
    return (
      args[0]?.toLowerCase() === 'zadd' &&
      args[1] === hub.keys.replicas &&
      args.includes(hub.config.hubId)
    );
  };
  const someSweeps = (): Promise<void> => log.next(isSweep, 4, 'four liveness refreshes');

  /** Names of the Redis connections the tailer blocks on (see hub.ts). */
  const tailConnections = async (): Promise<string[]> =>
    ((await hub.redis.command.client('LIST')) as string)
      .split('\n')
      .filter((line) => / name=agentcom:ui-events /.test(line));

  const uiClient = async (): Promise<UiClient> => {
    const client = new UiClient(hub.url, { session: await pageSession(hub.url) });
    clients.push(client);
    await client.connected();
    return client;
  };

  const lastStreamId = async (): Promise<string> =>
    (await hub.redis.command.xrevrange(hub.keys.events, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0';
  const compareIds = (a: string, b: string): number => {
    const [x, y] = [a.split('-').map(Number), b.split('-').map(Number)];
    return (x[0] ?? 0) - (y[0] ?? 0) || (x[1] ?? 0) - (y[1] ?? 0);
  };

  it('reads the stream only while a /ui socket is connected to the replica', async () => {
    const queue = `q-${randomBytes(3).toString('hex')}`;
    const agentId = `tail-${randomBytes(3).toString('hex')}`;
    const runTask = async (): Promise<{ agent: TestAgent; taskId: string }> => {
      const agent = agents[0] as TestAgent;
      const assigned = agent.nextAssignment();
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        queue,
        payload: 1,
      });
      const msg = await assigned;
      await agent.accept(msg);
      await agent.complete(msg, 'ok');
      return { agent, taskId: created.body.id };
    };

    // No browser: an agent comes and runs a task (transitions in the stream), sweeps go by,
    // and the stream is never read, nor a connection held for it.
    agents.push(await TestAgent.register(hub.url, agentId, [queue]));
    await runTask();
    expect(await hub.redis.command.xlen(hub.keys.events)).toBeGreaterThanOrEqual(4);
    await someSweeps();
    expect(log.count(isTailRead)).toBe(0);
    expect(await tailConnections()).toEqual([]);

    // Two browsers: the tail runs, from the moment the first was let in.
    const first = await uiClient();
    const second = await uiClient();
    expect(await tailConnections()).toHaveLength(1);
    const { taskId } = await runTask();
    for (const client of [first, second]) {
      expect(
        await client.transition(
          (e) => e.agent === agentId && e.to === 'working',
          'the accept transition',
        ),
      ).toMatchObject({ from: 'assigned', task: taskId, reason: 'accept', hub: hub.config.hubId });
    }
    expect(log.count(isTailRead)).toBeGreaterThan(0);

    // One leaves: the other is still served.
    first.close();
    const { taskId: third } = await runTask();
    await second.transition((e) => e.task === third && e.to === 'working', 'the next accept');

    // The last one leaves: the tail stops, its connection is closed, nothing is read any more.
    second.close();
    await eventually(async () => ((await tailConnections()).length === 0 ? true : undefined), {
      what: 'the tail connection closed',
    });
    const readsWhenStopped = log.count(isTailRead);
    await runTask();
    await someSweeps();
    expect(log.count(isTailRead)).toBe(readsWhenStopped);

    // A browser again: the tail starts over from now (the snapshot covers the past) and delivers.
    const before = await lastStreamId();
    const again = await uiClient();
    const { taskId: fifth } = await runTask();
    await again.transition((e) => e.task === fifth && e.to === 'working', 'the accept after');
    expect(again.received.filter((e) => compareIds(e.id, before) <= 0)).toEqual([]);
  });
});

describe('the tail stopped while Redis is down', () => {
  it('ends its reading loop at once, so the replica can still stop (the connection neither answers nor fails its read)', async () => {
    const redis = await startRedis();
    const connections: Redis[] = [];
    const tailer = new TransitionTailer({
      connect: () => {
        // as hub.ts makes it: commands wait for a reconnect however long Redis is gone
        const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
        connections.push(connection);
        return connection;
      },
      stream: 'tail-test:events',
      logger: createLogger({ level: 'silent', hubId: 'tail-test' }),
      onTransitions: () => undefined,
      blockMs: 5000,
    });
    try {
      await tailer.start();
      await redis.stop('SIGKILL');
      await eventually(() => (connections[0]?.status === 'reconnecting' ? true : undefined), {
        what: 'the tail connection reconnecting',
      });
      tailer.stop(); // the last browser left
      await withTimeout(tailer.close(), 5000, 'the tailer to close');
    } finally {
      for (const connection of connections) connection.disconnect();
      await redis.dispose();
    }
  });
});
