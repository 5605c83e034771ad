import type { AgentView, TaskView } from '@agentcom/shared';
import type { QueueSummary } from './hub-client';

/**
 * The human output of `agentcom`: tables and `key: value` lines. Pure functions of their input
 * and `now` (epoch ms), so they are unit-tested without a hub.
 */

/** `850ms`, `12s`, `3m04s`, `2h05m`, `3d04h`. Negative spans (clock skew) show as `0s`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '0s';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m${pad2(seconds % 60)}s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours}h${pad2(minutes % 60)}m`;
  return `${Math.floor(hours / 24)}d${pad2(hours % 24)}h`;
}

/** Seconds with one decimal, for a running clock: `0.4s`, `12.3s`, then as {@link formatDuration}. */
export function formatElapsed(ms: number): string {
  return ms < 60_000 ? `${(Math.max(0, ms) / 1000).toFixed(1)}s` : formatDuration(ms);
}

/** The age of an epoch-ms timestamp: `12s`, or `-` when there is none. */
export function formatAge(at: number | undefined, now: number): string {
  return at === undefined ? '-' : formatDuration(now - at);
}

/** `2025-01-02T03:04:05.678Z (12s ago)`. */
export function formatTime(at: number, now: number): string {
  return `${new Date(at).toISOString()} (${formatDuration(now - at)} ago)`;
}

const pad2 = (n: number): string => String(n).padStart(2, '0');

/** Columns separated by two spaces, padded to the widest cell; the last column is not padded. */
export function formatTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, column) =>
        column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0),
      )
      .join('  ')
      .trimEnd();
  return [headers, ...rows].map(line).join('\n') + '\n';
}

/** `key: value` lines, the keys padded to one width; undefined values are left out. */
export function formatFields(fields: ReadonlyArray<readonly [string, string | undefined]>): string {
  const shown = fields.filter(
    (field): field is readonly [string, string] => field[1] !== undefined,
  );
  const width = Math.max(0, ...shown.map(([key]) => key.length)) + 1;
  return shown.map(([key, value]) => `${`${key}:`.padEnd(width)} ${value}`).join('\n') + '\n';
}

/** One-line JSON, cut to `max` characters with `…`. */
export function compactJson(value: unknown, max = Infinity): string {
  const text = JSON.stringify(value) ?? 'undefined';
  return text.length <= max ? text : `${text.slice(0, Math.max(0, max - 1))}…`;
}

/** One line of text (newlines and runs of blanks folded to one space). */
export function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** Control characters a terminal may act on: C0 (but tab and newline), DEL and C1. */
// eslint-disable-next-line no-control-regex
const TERMINAL_CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/**
 * Text as the operator's terminal should show it: what agents and payloads wrote (log lines,
 * errors, results) may hold escape sequences that move the cursor, rewrite the screen or set
 * the window title; each control character is shown escaped instead (`\x1b`).
 */
export function visible(text: string): string {
  return text.replace(
    TERMINAL_CONTROLS,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

/**
 * JSON text with DEL and the C1 controls escaped too (`\u009b`): JSON.stringify escapes only
 * C0. The same document, safe on a terminal.
 */
export function terminalSafeJson(json: string): string {
  return json.replace(
    /[\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** `1/3`: the attempt started so far of the task's attempts. */
export const formatAttempt = (task: Pick<TaskView, 'attempt' | 'attempts'>): string =>
  `${task.attempt}/${task.attempts}`;

const formatLabels = (labels: Record<string, string> | undefined): string | undefined =>
  labels === undefined || Object.keys(labels).length === 0
    ? undefined
    : Object.entries(labels)
        .map(([key, value]) => `${key}=${value}`)
        .join(', ');

/** `agentcom task get`: the task as `key: value` lines, result and error in full. */
export function formatTask(task: TaskView, now: number): string {
  const runTime =
    task.startedAt !== undefined && task.finishedAt !== undefined
      ? formatDuration(task.finishedAt - task.startedAt)
      : undefined;
  return formatFields([
    ['id', task.id],
    ['queue', task.queue],
    ['state', task.state],
    ['agent', task.agentId],
    ['attempt', formatAttempt(task)],
    ['priority', task.priority > 0 ? String(task.priority) : undefined],
    ['timeout', task.timeoutMs !== undefined ? formatDuration(task.timeoutMs) : undefined],
    ['labels', formatLabels(task.labels)],
    ['created', formatTime(task.createdAt, now)],
    ['started', task.startedAt !== undefined ? formatTime(task.startedAt, now) : undefined],
    ['finished', task.finishedAt !== undefined ? formatTime(task.finishedAt, now) : undefined],
    ['run time', runTime],
    ['progress', task.progress !== undefined ? compactJson(task.progress) : undefined],
    ['result', task.result !== undefined ? compactJson(task.result) : undefined],
    ['error', task.error],
    ['payload', compactJson(task.payload, 200)],
  ]);
}

/** `agentcom task list`: one row per task. */
export function formatTaskTable(tasks: readonly TaskView[], now: number): string {
  return formatTable(
    ['ID', 'QUEUE', 'STATE', 'AGENT', 'ATTEMPT', 'AGE'],
    tasks.map((task) => [
      task.id,
      task.queue,
      task.state,
      task.agentId ?? '-',
      formatAttempt(task),
      formatAge(task.createdAt, now),
    ]),
  );
}

/**
 * The state column: a cooldown with its time left, and the ack timeouts the agent let pass in a
 * row when it has a streak (`cooldown 12s (missed acks: 3)`).
 */
function formatAgentState(agent: AgentView, now: number): string {
  const state =
    agent.state === 'cooldown' && agent.cooldownUntil !== undefined
      ? `cooldown ${formatDuration(agent.cooldownUntil - now)}`
      : agent.state;
  // a busy agent's drain takes effect when its task ends: shown, or `working` hides it
  const drain =
    agent.drainRequested !== undefined && agent.state !== 'draining' ? ' (drain pending)' : '';
  return agent.missedAcks
    ? `${state}${drain} (missed acks: ${agent.missedAcks})`
    : `${state}${drain}`;
}

/** `agentcom agents`: one row per agent, sorted by id as the hub pages them (`B` before `a`). */
export function formatAgentTable(agents: readonly AgentView[], now: number): string {
  const sorted = [...agents].sort((a, b) =>
    a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : 0,
  );
  return formatTable(
    ['AGENT', 'STATE', 'QUEUES', 'REPLICA', 'TASK', 'HEARTBEAT', 'DONE', 'FAILED'],
    sorted.map((agent) => [
      agent.agentId,
      formatAgentState(agent, now),
      agent.queues.join(','),
      agent.hubId ?? '-',
      agent.currentTask
        ? `${agent.currentTask.taskId} (${formatDuration(now - agent.currentTask.since)})`
        : '-',
      agent.lastHeartbeatAt !== undefined
        ? `${formatDuration(now - agent.lastHeartbeatAt)} ago`
        : '-',
      String(agent.tasksDone),
      String(agent.tasksFailed),
    ]),
  );
}

/** `agentcom agent get`: the agent as `key: value` lines. */
export function formatAgent(agent: AgentView, now: number): string {
  const task = agent.currentTask;
  return formatFields([
    ['agent', agent.agentId],
    ['state', agent.state],
    ['queues', agent.queues.join(', ')],
    ['labels', formatLabels(agent.labels)],
    ['replica', agent.hubId],
    ['task', task ? `${task.taskId} (queue ${task.queue})` : undefined],
    ['task since', task ? formatTime(task.since, now) : undefined],
    ['connected', agent.connectedAt !== undefined ? formatTime(agent.connectedAt, now) : undefined],
    [
      'disconnected',
      agent.disconnectedAt !== undefined ? formatTime(agent.disconnectedAt, now) : undefined,
    ],
    [
      'heartbeat',
      agent.lastHeartbeatAt !== undefined ? formatTime(agent.lastHeartbeatAt, now) : undefined,
    ],
    [
      'cooldown until',
      agent.cooldownUntil !== undefined && agent.cooldownUntil > now
        ? new Date(agent.cooldownUntil).toISOString()
        : undefined,
    ],
    // ack timeouts in a row: each one doubled the cooldown (`agentcom agent resume` ends it)
    ['missed acks', agent.missedAcks ? String(agent.missedAcks) : undefined],
    // an operator's lasts until `agentcom agent resume`; the agent's own until it reconnects
    ['drain', agent.drainRequested !== undefined ? `by ${agent.drainRequested}` : undefined],
    ['tasks done', String(agent.tasksDone)],
    ['tasks failed', String(agent.tasksFailed)],
  ]);
}

/** `agentcom queues`: waiting counts BullMQ's `waiting` and `prioritized` (both wait for an agent). */
export function formatQueueTable(queues: readonly QueueSummary[]): string {
  const count = (queue: QueueSummary, ...states: string[]): string =>
    String(states.reduce((sum, state) => sum + (queue.counts[state] ?? 0), 0));
  return formatTable(
    ['QUEUE', 'WAITING', 'ACTIVE', 'DELAYED', 'COMPLETED', 'FAILED', 'IDLE AGENTS'],
    queues.map((queue) => [
      queue.name,
      count(queue, 'waiting', 'prioritized'),
      count(queue, 'active'),
      count(queue, 'delayed'),
      count(queue, 'completed'),
      count(queue, 'failed'),
      String(queue.idleAgents),
    ]),
  );
}

/** The progress of a task being waited on: `task ID: running on agent-1, attempt 1/3, 12.3s`. */
export function formatProgress(task: TaskView, elapsedMs: number): string {
  const parts = [`task ${task.id}: ${task.state}`];
  if (task.agentId !== undefined) parts[0] += ` on ${task.agentId}`;
  parts.push(`attempt ${formatAttempt(task)}`, formatElapsed(elapsedMs));
  if (task.progress !== undefined && task.progress !== null) {
    parts.push(`progress ${compactJson(task.progress, 60)}`);
  }
  return parts.join(', ');
}
