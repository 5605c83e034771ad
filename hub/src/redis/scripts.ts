import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Redis } from 'ioredis';

/**
 * Loads agentcom's Lua scripts (one per atomic operation, in `src/redis/lua/`, each with a
 * KEYS/ARGV/returns header) and registers them as ioredis commands (EVALSHA with EVAL fallback).
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
  'transitionThenClaim',
] as const;
export type ScriptName = (typeof SCRIPT_NAMES)[number];

export function readScript(name: ScriptName): string {
  return readFileSync(resolve(LUA_DIR, `${name}.lua`), 'utf8');
}

/** A script as a local Lua function of (KEYS, ARGV), for a script composed of others. */
function asLocalFunction(name: ScriptName): string {
  return `local function ${name}(KEYS, ARGV)\n${readScript(name)}\nend\n`;
}

/** The source of a script as Redis runs it: `transitionThenClaim` is composed of two others. */
export function scriptSource(name: ScriptName): string {
  if (name === 'transitionThenClaim') {
    return asLocalFunction('transition') + asLocalFunction('claimIdle') + readScript(name);
  }
  return readScript(name);
}

/** Raw replies as Redis returns them. */
export type TransitionReply = [1, number] | [0, string, string, string, number] | [-1];
export type ClaimReply = [string, number, string, string, string] | null;
export type AcceptReply = [1 | 2, number, string] | [0, string];
export type BeginReportReply =
  ['busy'] | ['superseded', string] | ['duplicate', string[]] | ['ok', string[], string, string];

export interface AgentScripts {
  transition(keys: string[], spec: string): Promise<TransitionReply>;
  claimIdle(keys: [string, string, string], args: (string | number)[]): Promise<ClaimReply>;
  accept(keys: [string, string, string, string], args: (string | number)[]): Promise<AcceptReply>;
  beginReport(
    keys: [string, string, string, string],
    args: (string | number)[],
  ): Promise<BeginReportReply>;
  findJobByLock(queuePrefix: string, token: string): Promise<string | null>;
  heartbeats(agentKeys: string[], args: (string | number)[]): Promise<string[]>;
  delIfEquals(key: string, value: string): Promise<number>;
  transitionThenClaim(
    transitionKeys: string[],
    spec: string,
    claimKeys: [string, string, string],
    claimArgs: (string | number)[],
  ): Promise<[TransitionReply, ClaimReply]>;
}

type Command<R> = (...args: (string | number)[]) => Promise<R>;

/** Registers every script on `client`; its commands then work in pipelines too. */
export function registerScripts(client: Redis): AgentScripts {
  const define = <R>(name: ScriptName, numberOfKeys?: number): Command<R> => {
    const command = `agentcom_${name}`;
    client.defineCommand(command, {
      lua: scriptSource(name),
      ...(numberOfKeys !== undefined ? { numberOfKeys } : {}),
    });
    const bound = (client as unknown as Record<string, Command<R>>)[command];
    if (!bound) throw new Error(`script ${name} was not registered`);
    return bound.bind(client);
  };
  const transition = define<TransitionReply>('transition');
  const claimIdle = define<ClaimReply>('claimIdle', 3);
  const accept = define<AcceptReply>('accept', 4);
  const beginReport = define<BeginReportReply>('beginReport', 4);
  const findJobByLock = define<string | null>('findJobByLock', 0);
  const heartbeats = define<string[]>('heartbeats');
  const delIfEquals = define<number>('delIfEquals', 1);
  const transitionThenClaim = define<[TransitionReply, ClaimReply]>('transitionThenClaim');
  return {
    transition: (keys, spec) => transition(keys.length, ...keys, spec),
    claimIdle: (keys, args) => claimIdle(...keys, ...args),
    accept: (keys, args) => accept(...keys, ...args),
    beginReport: (keys, args) => beginReport(...keys, ...args),
    findJobByLock: (queuePrefix, token) => findJobByLock(queuePrefix, token),
    heartbeats: (agentKeys, args) => heartbeats(agentKeys.length, ...agentKeys, ...args),
    delIfEquals: (key, value) => delIfEquals(key, value),
    transitionThenClaim: (transitionKeys, spec, claimKeys, claimArgs) =>
      transitionThenClaim(
        transitionKeys.length + claimKeys.length,
        ...transitionKeys,
        ...claimKeys,
        transitionKeys.length,
        spec,
        ...claimArgs,
      ),
  };
}
