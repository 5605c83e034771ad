import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Redis } from 'ioredis';
import { LuaScript, type ScriptArg } from './script-command';
import { moveToActive as bullMoveToActive } from 'bullmq/dist/cjs/scripts/moveToActive-11.js';
import { moveToFinished as bullMoveToFinished } from 'bullmq/dist/cjs/scripts/moveToFinished-14.js';
import { removeJob as bullRemoveJob } from 'bullmq/dist/cjs/scripts/removeJob-2.js';
import { updateProgress as bullUpdateProgress } from 'bullmq/dist/cjs/scripts/updateProgress-3.js';

/**
 * Loads agentcom's Lua scripts (one per atomic operation, in `src/redis/lua/`, each with a
 * KEYS/ARGV/returns header) and runs them (EVALSHA with EVAL fallback, `script-command.ts`).
 * The folder is resolved from the package root so it works from `src/` (tests) and `dist/`.
 */
export const LUA_DIR = resolve(__dirname, '..', '..', 'src', 'redis', 'lua');

export const SCRIPT_NAMES = [
  'transition',
  'claimIdle',
  'accept',
  'beginReport',
  'findJobByLock',
  'heartbeats',
  'delIfEquals',
  'replaceIfEquals',
  'transitionThenClaim',
  'claimAndFetch',
  'completeAtOnce',
  'cancelTask',
  'idsAfter',
  'restoreAgent',
  'removeIfDue',
  'settleIdempotencyKey',
  'registerAgent',
  'appendTaskLog',
  'updateTaskProgress',
  'heldTask',
] as const;
export type ScriptName = (typeof SCRIPT_NAMES)[number];

export function readScript(name: ScriptName): string {
  return readFileSync(resolve(LUA_DIR, `${name}.lua`), 'utf8');
}

/**
 * Lua source as a local function of (KEYS, ARGV, ...), for a script composed of others (a
 * script's own `...` is empty when Redis runs it alone).
 */
function localFunction(name: string, source: string): string {
  return `local function ${name}(KEYS, ARGV, ...)\n${source}\nend\n`;
}

/**
 * BullMQ's own `moveToActive` and `moveToFinished` scripts, as the installed bullmq package ships
 * them (includes resolved): `claimAndFetch` and `completeAtOnce` run them inside the same script
 * as agentcom's own steps. bullmq is pinned to an exact version; `agent-scripts.int.test.ts`
 * checks the composed scripts against BullMQ's own reading of the queue.
 */
export const BULL_MOVE_TO_ACTIVE: string = bullMoveToActive.content;
export const BULL_MOVE_TO_FINISHED: string = bullMoveToFinished.content;
/** BullMQ's own `removeJob` script: `cancelTask` removes a waiting job with it. */
export const BULL_REMOVE_JOB: string = bullRemoveJob.content;
/** BullMQ's own `updateProgress` script: `updateTaskProgress` writes a task's progress with it. */
export const BULL_UPDATE_PROGRESS: string = bullUpdateProgress.content;

/**
 * Scripts composed of others: the local functions (name, source) that come before the script's
 * own body. `claimAndFetch` is `claimIdle` and BullMQ's `moveToActive`; `transitionThenClaim` and
 * `completeAtOnce` build on `transition` and `claimAndFetch`. The scripts that end a task
 * (`completeAtOnce`, `cancelTask`) settle its idempotency key in the same call; those that write
 * for an agent's task event (`appendTaskLog`, `updateTaskProgress`) check `heldTask` first.
 */
const COMPOSED: Partial<Record<ScriptName, ReadonlyArray<readonly [string, () => string]>>> = {
  claimAndFetch: [
    ['claimIdle', () => readScript('claimIdle')],
    ['moveToActive', () => BULL_MOVE_TO_ACTIVE],
  ],
  transitionThenClaim: [
    ['transition', () => readScript('transition')],
    ['claimAndFetch', () => scriptSource('claimAndFetch')],
  ],
  completeAtOnce: [
    ['transition', () => readScript('transition')],
    ['claimAndFetch', () => scriptSource('claimAndFetch')],
    ['moveToFinished', () => BULL_MOVE_TO_FINISHED],
    ['settleIdempotencyKey', () => readScript('settleIdempotencyKey')],
  ],
  cancelTask: [
    ['removeJob', () => BULL_REMOVE_JOB],
    ['settleIdempotencyKey', () => readScript('settleIdempotencyKey')],
  ],
  appendTaskLog: [['heldTask', () => readScript('heldTask')]],
  updateTaskProgress: [
    ['heldTask', () => readScript('heldTask')],
    ['updateProgress', () => BULL_UPDATE_PROGRESS],
  ],
};

/** The source of a script as Redis runs it (composed scripts: their parts first). */
export function scriptSource(name: ScriptName): string {
  const parts = (COMPOSED[name] ?? []).map(([fn, source]) => localFunction(fn, source()));
  return parts.join('') + readScript(name);
}

/**
 * A script of agentcom, ready to run on any client (EVALSHA, EVAL when Redis does not know it
 * yet; `script-command.ts`). Every script is built here, from the folder and the composition above.
 */
export function luaScript(name: ScriptName): LuaScript {
  return new LuaScript(name, scriptSource(name));
}

/** Raw replies as Redis returns them. */
export type TransitionReply = [1, number] | [0, string, string, string, number] | [-1];
export type ClaimReply = [string, number, string, string, string, string, string] | null;
/** See `claimAndFetch.lua`. */
export type ClaimAndFetchReply =
  | [string, number, string, string, string, string, string, 'assigned', string, string[], 0 | 1]
  | [string, number, string, string, string, string, string, 'fetched', string]
  | [string, number, string, string, string, string, string, 'claimed', null]
  | null;
/** See `accept.lua`; `[-1]`: the connection's token is no longer the agent's. */
export type AcceptReply = [1 | 2, number, string] | [0, string] | [-1];
/** See `completeAtOnce.lua`. */
export type CompleteAtOnceReply =
  | ['revoked']
  | ['slow']
  | ['completed', string, string, TransitionReply, ClaimAndFetchReply, [string, string] | null];
/** See `beginReport.lua`. */
export type BeginReportReply =
  | ['revoked']
  | ['busy']
  | ['superseded', string]
  | ['duplicate', string[]]
  | ['ok', string[], string, string, string];

export interface AgentScripts {
  transition(keys: string[], spec: string): Promise<TransitionReply>;
  claimIdle(keys: [string, string, string], args: (string | number)[]): Promise<ClaimReply>;
  accept(keys: [string, string, string, string], args: (string | number)[]): Promise<AcceptReply>;
  beginReport(keys: [string, string, string], args: (string | number)[]): Promise<BeginReportReply>;
  findJobByLock(queuePrefix: string, token: string): Promise<string | null>;
  heartbeats(agentKeys: string[], args: (string | number)[]): Promise<string[]>;
  delIfEquals(key: string, value: string): Promise<number>;
  replaceIfEquals(key: string, value: string, previous: string, ttlMs: number): Promise<number>;
  removeIfDue(index: string, member: string, dueBy: number): Promise<number>;
  claimAndFetch(
    keys: [string, string, string],
    args: (string | number)[],
  ): Promise<ClaimAndFetchReply>;
  transitionThenClaim(
    transitionKeys: string[],
    spec: string,
    claimKeys: [string, string, string],
    claimArgs: (string | number)[],
  ): Promise<[TransitionReply, ClaimAndFetchReply]>;
  completeAtOnce(
    keys: string[],
    args: ReadonlyArray<string | number | Buffer>,
  ): Promise<CompleteAtOnceReply>;
  registerAgent(keys: [string, string, string], args: string[]): Promise<'created' | 'rotated'>;
}

/**
 * agentcom's scripts, run on `client` (EVALSHA, EVAL when Redis does not know the script yet;
 * encoded by `script-command.ts`).
 */
export function agentScripts(client: Redis): AgentScripts {
  const define = <R>(name: ScriptName) => {
    const script = luaScript(name);
    return (keys: readonly string[], args: readonly ScriptArg[] = []): Promise<R> =>
      script.run<R>(client, keys, args);
  };
  const transition = define<TransitionReply>('transition');
  const findJobByLock = define<string | null>('findJobByLock');
  const delIfEquals = define<number>('delIfEquals');
  const replaceIfEquals = define<number>('replaceIfEquals');
  const removeIfDue = define<number>('removeIfDue');
  const transitionThenClaim = define<[TransitionReply, ClaimAndFetchReply]>('transitionThenClaim');
  return {
    // these take their KEYS and ARGV as they are
    claimIdle: define<ClaimReply>('claimIdle'),
    accept: define<AcceptReply>('accept'),
    beginReport: define<BeginReportReply>('beginReport'),
    heartbeats: define<string[]>('heartbeats'),
    claimAndFetch: define<ClaimAndFetchReply>('claimAndFetch'),
    completeAtOnce: define<CompleteAtOnceReply>('completeAtOnce'),
    registerAgent: define<'created' | 'rotated'>('registerAgent'),
    transition: (keys, spec) => transition(keys, [spec]),
    findJobByLock: (queuePrefix, token) => findJobByLock([], [queuePrefix, token]),
    delIfEquals: (key, value) => delIfEquals([key], [value]),
    replaceIfEquals: (key, value, previous, ttlMs) =>
      replaceIfEquals([key], [value, previous, ttlMs]),
    removeIfDue: (index, member, dueBy) => removeIfDue([index], [member, dueBy]),
    transitionThenClaim: (transitionKeys, spec, claimKeys, claimArgs) =>
      transitionThenClaim(
        [...transitionKeys, ...claimKeys],
        [transitionKeys.length, spec, ...claimArgs],
      ),
  };
}
