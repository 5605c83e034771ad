/**
 * The transport floor: a stand-in hub that speaks agentcom's wire protocol with the same
 * libraries and options as the real hub (Fastify for `POST /v1/tasks`, Socket.IO on the `/agent`
 * namespace, websocket only) and does nothing else: no Redis, no validation, no state machine, no
 * BullMQ, no adapter. A task is held in memory and pushed to an idle agent connected to this
 * process; `task:accept` and `task:complete` are answered at once.
 *
 * It is not a hub. It measures what the messages of one task cost on this machine (an HTTP request
 * and response, `task:assign`, `task:accept` and its ack, `task:complete` and its ack), with the
 * same simulated agents and submitter as the throughput benchmark: the most a hub built on these
 * libraries and this protocol could reach. `bench-throughput.ts` runs it beside raw BullMQ and
 * the real hubs.
 *
 * Env: PORT, HOST.
 */
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import { Server, type Socket } from 'socket.io';
import { AGENT_NAMESPACE, MAX_MESSAGE_BYTES, type TaskAssign } from '@agentcom/shared';

type Ack = (response: unknown) => void;

const app = Fastify({ bodyLimit: MAX_MESSAGE_BYTES });
const io = new Server(app.server, {
  transports: ['websocket'],
  maxHttpBufferSize: MAX_MESSAGE_BYTES,
  serveClient: false,
});
const agents = io.of(AGENT_NAMESPACE);

/** Idle agents of this process, longest idle first; tasks waiting for one. */
const idle: Socket[] = [];
const waiting: TaskAssign[] = [];
let created = 0;

function dispatch(): void {
  while (idle.length > 0 && waiting.length > 0) {
    const socket = idle.shift();
    const task = waiting.shift();
    if (socket?.connected && task) socket.emit('task:assign', task);
    else if (task) waiting.unshift(task);
  }
}

function becomeIdle(socket: Socket): void {
  if (!idle.includes(socket)) idle.push(socket);
  dispatch();
}

agents.on('connection', (socket) => {
  const lastArg = (args: unknown[]): Ack | undefined => {
    const ack = args.at(-1);
    return typeof ack === 'function' ? (ack as Ack) : undefined;
  };
  socket.on('task:accept', (...args: unknown[]) => lastArg(args)?.({ ok: true, state: 'working' }));
  socket.on('task:complete', (...args: unknown[]) => {
    lastArg(args)?.({ ok: true });
    becomeIdle(socket);
  });
  socket.on('task:fail', (...args: unknown[]) => {
    lastArg(args)?.({ ok: true });
    becomeIdle(socket);
  });
  socket.on('agent:heartbeat', (...args: unknown[]) =>
    lastArg(args)?.({ ok: true, state: 'idle', hubId: 'floor' }),
  );
  socket.on('disconnect', () => {
    const at = idle.indexOf(socket);
    if (at >= 0) idle.splice(at, 1);
  });
  becomeIdle(socket);
});

app.get('/readyz', async () => ({ ok: true }));
app.post('/v1/agents', async (request, reply) => {
  const { agentId } = request.body as { agentId: string };
  return reply.status(201).send({ agentId, token: `floor-${agentId}` });
});
interface TaskBody {
  queue?: string;
  payload?: unknown;
}

function enqueue(body: TaskBody): { id: string; state: 'waiting'; duplicate: false } {
  const id = randomUUID();
  created++;
  waiting.push({
    task: { id, queue: body.queue ?? 'default', payload: body.payload, createdAt: Date.now() },
    token: `floor:${id}`,
    attempt: 1,
    attempts: 1,
  });
  return { id, state: 'waiting', duplicate: false };
}

// the reply goes first, then the pushes: as in the hub, where the dispatch step follows the add
app.post('/v1/tasks', async (request, reply) => {
  void reply.status(201).send(enqueue(request.body as TaskBody));
  dispatch();
  return reply;
});
app.post('/v1/tasks/batch', async (request, reply) => {
  const { tasks } = request.body as { tasks: TaskBody[] };
  void reply.status(201).send({ tasks: tasks.map(enqueue) });
  dispatch();
  return reply;
});
app.get('/v1/queues', async () => [
  { name: 'default', counts: { waiting: waiting.length }, idleAgents: idle.length, created },
]);

const port = Number(process.env.PORT ?? 0);
app.listen({ port, host: process.env.HOST ?? '127.0.0.1' }).catch((err: unknown) => {
  process.stderr.write(`floor hub: ${String(err)}\n`);
  process.exit(1);
});
