import { readFileSync } from 'node:fs';
import { round } from './util';

/** The parts of a V8 `.cpuprofile` (what `node --cpu-prof` writes) used here. */
interface CpuProfile {
  nodes: Array<{
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }>;
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Sampled window (ms) and the share of it the main thread was busy (not idle). */
  windowMs: number;
  busyMs: number;
  busyPct: number;
  samples: number;
  /** Self time by package or area, % of busy time. */
  categories: Array<{ name: string; ms: number; pct: number }>;
  /** Functions by self time, % of busy time. */
  topSelf: Array<{ fn: string; where: string; category: string; ms: number; pct: number }>;
  /** agentcom's own functions by inclusive time (synchronous stacks only), % of busy time. */
  topAgentcomInclusive: Array<{ fn: string; where: string; ms: number; pct: number }>;
}

const SPECIAL = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);
/** Native stream-write bindings: their self time is the write(2)/writev(2) syscall. */
const SOCKET_WRITES = new Set([
  'writeUtf8String',
  'writeBuffer',
  'writev',
  'writeLatin1String',
  'writeAsciiString',
  'writeUcs2String',
]);

export function categorize(url: string, functionName: string): string {
  if (!url) {
    if (SPECIAL.has(functionName)) return functionName;
    return SOCKET_WRITES.has(functionName) ? 'socket writes (syscalls)' : '(native / V8)';
  }
  if (url.startsWith('node:')) return 'node core';
  const match = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (match?.[1]) return match[1];
  if (url.includes('/hub/dist/')) return 'agentcom hub';
  if (url.includes('/shared/dist/') || url.includes('/shared/src/')) return 'agentcom shared';
  return 'other';
}

function where(url: string, line: number): string {
  if (!url) return '';
  const short = url
    .replace(/^file:\/\//, '')
    .replace(/^.*\/node_modules\//, '')
    .replace(/^.*\/(hub|shared)\/dist\//, '$1/');
  return `${short}:${line + 1}`;
}

/**
 * Summarises a profile over a window given in ms since the profile started (default: all of
 * it). Each sample counts for the time until the next one.
 */
export function summarizeProfile(
  file: string,
  relativeWindow?: { fromMs: number; toMs: number },
  top = 25,
): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const window = relativeWindow && {
    fromUs: profile.startTime + relativeWindow.fromMs * 1000,
    toUs: profile.startTime + relativeWindow.toMs * 1000,
  };
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes)
    for (const child of node.children ?? []) parent.set(child, node.id);

  const selfUs = new Map<number, number>();
  let t = profile.startTime;
  let windowUs = 0;
  let samples = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    const next = profile.timeDeltas[i + 1] ?? 0;
    if (window && (t < window.fromUs || t > window.toUs)) continue;
    const id = profile.samples[i] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + next);
    windowUs += next;
    samples++;
  }

  const key = (id: number): { fn: string; where: string; category: string } => {
    const frame = byId.get(id)?.callFrame;
    const fn = frame?.functionName || '(anonymous)';
    return {
      fn,
      where: where(frame?.url ?? '', frame?.lineNumber ?? 0),
      category: categorize(frame?.url ?? '', fn),
    };
  };

  let idleUs = 0;
  const categories = new Map<string, number>();
  const functions = new Map<string, { fn: string; where: string; category: string; us: number }>();
  const inclusive = new Map<string, { fn: string; where: string; us: number }>();
  for (const [id, us] of selfUs) {
    const k = key(id);
    if (k.fn === '(idle)') {
      idleUs += us;
      continue;
    }
    categories.set(k.category, (categories.get(k.category) ?? 0) + us);
    const fk = `${k.fn}@${k.where}`;
    const entry = functions.get(fk) ?? { ...k, us: 0 };
    entry.us += us;
    functions.set(fk, entry);
    // inclusive: credit each distinct agentcom frame on the stack once
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = key(at);
      if (!frame.category.startsWith('agentcom')) continue;
      const ik = `${frame.fn}@${frame.where}`;
      if (seen.has(ik)) continue;
      seen.add(ik);
      const inc = inclusive.get(ik) ?? { fn: frame.fn, where: frame.where, us: 0 };
      inc.us += us;
      inclusive.set(ik, inc);
    }
  }
  const busyUs = windowUs - idleUs;
  const pct = (us: number): number => round((us / Math.max(1, busyUs)) * 100);
  const ms = (us: number): number => round(us / 1000);
  return {
    windowMs: ms(windowUs),
    busyMs: ms(busyUs),
    busyPct: round((busyUs / Math.max(1, windowUs)) * 100),
    samples,
    categories: [...categories.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([name, us]) => ({ name, ms: ms(us), pct: pct(us) })),
    topSelf: [...functions.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((f) => ({
        fn: f.fn,
        where: f.where,
        category: f.category,
        ms: ms(f.us),
        pct: pct(f.us),
      })),
    topAgentcomInclusive: [...inclusive.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, 15)
      .map((f) => ({ fn: f.fn, where: f.where, ms: ms(f.us), pct: pct(f.us) })),
  };
}
