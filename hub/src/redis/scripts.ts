import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Redis } from 'ioredis';

/**
 * Loads agentcom's Lua scripts (one per atomic operation, in `src/redis/lua/`, each with a
 * KEYS/ARGV/returns header) and registers them as ioredis commands (EVALSHA with EVAL fallback).
 * The folder is resolved from the package root so it works from `src/` (tests) and `dist/`.
 */
export const LUA_DIR = resolve(__dirname, '..', '..', 'src', 'redis', 'lua');

export const SCRIPT_NAMES = ['transition', 'claimIdle'] as const;
export type ScriptName = (typeof SCRIPT_NAMES)[number];

export function readScript(name: ScriptName): string {
  return readFileSync(resolve(LUA_DIR, `${name}.lua`), 'utf8');
}

/** Raw replies as Redis returns them. */
export type TransitionReply = [1, number] | [0, string, string, string, number] | [-1];
export type ClaimReply = [string, number, string] | null;

export interface AgentScripts {
  transition(keys: string[], spec: string): Promise<TransitionReply>;
  claimIdle(keys: [string, string, string], args: (string | number)[]): Promise<ClaimReply>;
}

interface ScriptedRedis {
  agentcomTransition(numKeys: number, ...args: (string | number)[]): Promise<TransitionReply>;
  agentcomClaimIdle(...args: (string | number)[]): Promise<ClaimReply>;
}

export function registerScripts(client: Redis): AgentScripts {
  client.defineCommand('agentcomTransition', { lua: readScript('transition') });
  client.defineCommand('agentcomClaimIdle', { lua: readScript('claimIdle'), numberOfKeys: 3 });
  const scripted = client as unknown as ScriptedRedis;
  return {
    transition: (keys, spec) => scripted.agentcomTransition(keys.length, ...keys, spec),
    claimIdle: (keys, args) => scripted.agentcomClaimIdle(...keys, ...args),
  };
}
