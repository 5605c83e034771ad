/**
 * `make bench`: runs every benchmark (`.tmp/bench/bench-<name>.js`) one after another, each as a
 * child process in its own process group (killed whole on its deadline), collects the JSON line
 * each prints, and writes `test/bench/results.json` and `test/bench/RESULTS.md`.
 * Arguments: benchmark names to run a subset; `--render` writes RESULTS.md again from
 * results.json without running anything. `QUICK=1`: the small version.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import type { ProfileSummary } from './lib/cpuprofile';
import { redisServerVersion } from './lib/redis';
import type { BenchResult } from './lib/result';
import type { ScriptTime } from './lib/script-times';
import { BENCH_DIR, QUICK, ROOT, log } from './lib/util';

/** Each benchmark has its own deadline; the runner kills its process group a little later. */
const BENCHMARKS: Array<{ name: string; title: string; quickMs: number; fullMs: number }> = [
  { name: 'throughput', title: 'Throughput', quickMs: 160_000, fullMs: 1_520_000 },
  { name: 'latency', title: 'Dispatch latency', quickMs: 160_000, fullMs: 520_000 },
  { name: 'redis-cost', title: 'Redis cost per task', quickMs: 160_000, fullMs: 420_000 },
  { name: 'connections', title: 'Idle connections', quickMs: 160_000, fullMs: 920_000 },
  { name: 'failover', title: 'Replica failover', quickMs: 160_000, fullMs: 420_000 },
  { name: 'dead-agent', title: 'Dead agent', quickMs: 130_000, fullMs: 320_000 },
  { name: 'profile', title: 'Hub CPU profile', quickMs: 160_000, fullMs: 920_000 },
];

const OUT_DIR = join(ROOT, 'test', 'bench');

let current: number | undefined;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    if (current !== undefined) killGroup(current);
    process.exit(130);
  });
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone
  }
}

function runOne(name: string, title: string, timeoutMs: number): Promise<BenchResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(BENCH_DIR, `bench-${name}.js`)], {
      cwd: ROOT,
      env: { ...process.env, QUICK: QUICK ? '1' : '' },
      stdio: ['ignore', 'pipe', 'inherit'],
      detached: true,
    });
    current = child.pid;
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    const timer = setTimeout(() => {
      log(`${name}: no result within ${timeoutMs / 1000} s, killing it`);
      if (child.pid !== undefined) killGroup(child.pid);
    }, timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      // whatever it left behind (hubs, redis-server, load processes) goes with its group
      if (child.pid !== undefined) killGroup(child.pid);
      current = undefined;
      const line = stdout
        .split('\n')
        .reverse()
        .find((l) => l.startsWith('{') && l.includes('"bench"'));
      let parsed: BenchResult | undefined;
      try {
        parsed = line ? (JSON.parse(line) as BenchResult) : undefined;
      } catch {
        parsed = undefined;
      }
      resolve(
        parsed ?? {
          bench: name,
          title,
          quick: QUICK,
          size: '',
          figures: [],
          error: `exited with ${code ?? signal} without a result`,
          durationMs: Math.round(performance.now() - started),
        },
      );
    });
  });
}

function packageVersion(name: string): string {
  try {
    const pkg = JSON.parse(
      readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8'),
    ) as { version?: string };
    return pkg.version ?? '?';
  } catch {
    return '?';
  }
}

function gitRevision(): string {
  try {
    const rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    return `${rev.trim()}${dirty.trim() ? ' (uncommitted changes)' : ''}`;
  } catch {
    return 'unknown';
  }
}

interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  redis: string;
  packages: Record<string, string>;
  git: string;
  loadAvgStart: number[];
  loadAvgEnd?: number[];
}

/**
 * `--render`: writes RESULTS.md again from results.json (after an edit of the text around the
 * figures), without running anything.
 */
function renderOnly(): void {
  const saved = JSON.parse(readFileSync(join(OUT_DIR, 'results.json'), 'utf8')) as {
    date: string;
    quick: boolean;
    totalMs: number;
    machine: Machine;
    results: BenchResult[];
  };
  if (saved.quick !== QUICK)
    throw new Error(
      `results.json holds a ${saved.quick ? 'QUICK' : 'full'} run: set QUICK to match`,
    );
  writeFileSync(
    join(OUT_DIR, 'RESULTS.md'),
    renderMarkdown(saved.date, saved.totalMs, saved.machine, saved.results, readBaseline()),
  );
  formatOutputs();
  log('wrote test/bench/RESULTS.md from results.json');
}

async function main(): Promise<void> {
  if (process.argv.includes('--render')) {
    renderOnly();
    return;
  }
  const only = process.argv.slice(2);
  const selected = BENCHMARKS.filter((b) => only.length === 0 || only.includes(b.name));
  if (selected.length === 0) throw new Error(`no benchmark named ${only.join(', ')}`);
  const cpuList = cpus();
  const machine: Machine = {
    cpu: cpuList[0]?.model ?? 'unknown',
    cores: cpuList.length,
    memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: `${process.platform} ${release()}`,
    node: process.version,
    redis: redisServerVersion(),
    packages: Object.fromEntries(
      [
        'bullmq',
        'ioredis',
        'socket.io',
        'socket.io-client',
        '@socket.io/redis-adapter',
        'fastify',
      ].map((name) => [name, packageVersion(name)]),
    ),
    git: gitRevision(),
    loadAvgStart: loadavg().map((n) => Math.round(n * 100) / 100),
  };
  const date = new Date().toISOString();
  const started = performance.now();
  log(`benchmarks${QUICK ? ' (QUICK)' : ''}: ${selected.map((b) => b.name).join(', ')}`);
  const results: BenchResult[] = [];
  for (const bench of selected) {
    const result = await runOne(bench.name, bench.title, QUICK ? bench.quickMs : bench.fullMs);
    results.push(result);
    for (const figure of result.figures) {
      const verdict = figure.pass === undefined ? '' : figure.pass ? '  [pass]' : '  [MISS]';
      log(`  ${figure.name}: ${figure.value}${figure.unit ? ` ${figure.unit}` : ''}${verdict}`);
    }
    if (result.error) log(`  ERROR: ${result.error.split('\n')[0]}`);
  }
  machine.loadAvgEnd = loadavg().map((n) => Math.round(n * 100) / 100);
  const totalMs = Math.round(performance.now() - started);
  writeFileSync(
    join(OUT_DIR, 'results.json'),
    `${JSON.stringify({ date, quick: QUICK, totalMs, machine, results }, null, 2)}\n`,
  );
  writeFileSync(
    join(OUT_DIR, 'RESULTS.md'),
    renderMarkdown(date, totalMs, machine, results, readBaseline()),
  );
  formatOutputs();
  log(`wrote test/bench/RESULTS.md and results.json (${Math.round(totalMs / 1000)} s in all)`);
  const failed = results.filter((r) => r.error);
  if (failed.length > 0) {
    log(`failed: ${failed.map((r) => r.bench).join(', ')}`);
    process.exit(1);
  }
}

/** Formats the two files as the repository does (`prettier --check .` is part of `make check`). */
function formatOutputs(): void {
  try {
    execFileSync(
      join(ROOT, 'node_modules', '.bin', 'prettier'),
      ['--write', join(OUT_DIR, 'RESULTS.md'), join(OUT_DIR, 'results.json')],
      { cwd: ROOT, stdio: 'ignore' },
    );
  } catch {
    log('prettier not available: RESULTS.md left unformatted');
  }
}

// ---- RESULTS.md ----

/**
 * `test/bench/baseline.json`: a full-size run kept from before the optimisation pass (issue 7),
 * shown as the "before" column of full-size runs. Same format as results.json.
 */
interface Baseline {
  date: string;
  quick: boolean;
  machine: Machine;
  results: BenchResult[];
}

function readBaseline(): Baseline | undefined {
  try {
    const baseline = JSON.parse(readFileSync(join(OUT_DIR, 'baseline.json'), 'utf8')) as Baseline;
    return baseline.quick === QUICK ? baseline : undefined;
  } catch {
    return undefined;
  }
}

const cell = (value: string | number | undefined): string =>
  String(value ?? '')
    .replace(/\|/g, '\\|')
    .replace(/\n/g, ' ');

function renderMarkdown(
  date: string,
  totalMs: number,
  machine: Machine,
  results: BenchResult[],
  baseline?: Baseline,
): string {
  const out: string[] = [];
  const before = new Map<string, string>();
  for (const result of baseline?.results ?? []) {
    for (const f of result.figures) {
      before.set(`${result.bench}\u0000${f.name}`, `${f.value}${f.unit ? ` ${f.unit}` : ''}`);
    }
  }
  const mode = QUICK ? 'QUICK (small sizes: `make bench QUICK=1`)' : 'full size (`make bench`)';
  out.push('# agentcom benchmarks', '');
  out.push(
    `Generated by \`test/bench/run.ts\` on ${date.slice(0, 16).replace('T', ' ')} UTC, ${mode}, in ${Math.round(totalMs / 1000)} s.`,
    QUICK
      ? '**These are QUICK results**: counts are scaled down (see "What ran"); compare targets with care.'
      : '',
    'The machine is shared and noisy: figures that can be are ratios against raw BullMQ measured in',
    'the same run on the same private Redis. Raw data: `test/bench/results.json`.',
    '',
  );
  out.push('## Machine', '', '| | |', '|---|---|');
  out.push(`| CPU | ${cell(machine.cpu)} × ${machine.cores} |`);
  out.push(`| memory | ${machine.memoryGiB} GiB |`);
  out.push(`| OS | ${cell(machine.kernel)} |`);
  out.push(`| Node | ${machine.node} |`);
  out.push(`| redis-server | ${machine.redis} |`);
  for (const [name, version] of Object.entries(machine.packages))
    out.push(`| ${name} | ${version} |`);
  out.push(`| agentcom | ${cell(machine.git)} |`);
  out.push(
    `| load average (1/5/15 min) | start ${machine.loadAvgStart.join(' / ')}, end ${(machine.loadAvgEnd ?? []).join(' / ')} |`,
    '',
  );

  out.push('## Results', '');
  if (baseline) {
    out.push(
      `"Before" is the full-size run of ${baseline.date.slice(0, 10)} (${cell(baseline.machine.git)}), before the optimisation pass of issue 7 (\`test/bench/baseline.json\`); what changed is listed under the profile.`,
      '',
    );
  }
  out.push(
    `| benchmark | figure | value | target | result |${baseline ? ' before |' : ''} note |`,
    `|---|---|---|---|---|${baseline ? '---|' : ''}---|`,
  );
  for (const result of results) {
    if (result.error) {
      out.push(
        `| ${cell(result.title)} | **did not finish** | | | error |${baseline ? ' |' : ''} ${cell(result.error.split('\n')[0])} |`,
      );
    }
    for (const f of result.figures) {
      const value = `${f.value}${f.unit ? ` ${f.unit}` : ''}`;
      const verdict = f.pass === undefined ? '' : f.pass ? 'pass' : '**miss**';
      const was = baseline ? ` ${cell(before.get(`${result.bench}\u0000${f.name}`) ?? '')} |` : '';
      out.push(
        `| ${cell(result.title)} | ${cell(f.name)} | ${cell(value)} | ${cell(f.target ?? '')} | ${verdict} |${was} ${cell(f.note ?? '')} |`,
      );
    }
  }
  out.push('');

  out.push('## What ran', '');
  for (const result of results) {
    out.push(
      `- **${result.title}** (${Math.round(result.durationMs / 1000)} s${result.quick ? ', QUICK' : ''}): ${result.size || 'n/a'}`,
    );
  }
  out.push('');

  type CostDetail = {
    topServer: Record<string, number>;
    topServerUsec: Record<string, number>;
    topClient: Record<string, number>;
  };
  const cost = results.find((r) => r.bench === 'redis-cost' && !r.error)?.details as
    | {
        agentcom?: CostDetail;
        raw?: CostDetail;
        scripts?: { rate: number; agentcom: ScriptTime[]; raw: ScriptTime[] };
      }
    | undefined;
  if (cost?.agentcom && cost.raw) {
    const { agentcom, raw } = cost;
    const table = (title: string, pick: (d: CostDetail) => Record<string, number>): void => {
      const a = pick(agentcom);
      const r = pick(raw);
      out.push(`### ${title}`, '', '| command | agentcom | raw BullMQ |', '|---|---|---|');
      const names = [...new Set([...Object.keys(a), ...Object.keys(r)])].sort(
        (x, y) => (a[y] ?? 0) - (a[x] ?? 0),
      );
      for (const name of names) out.push(`| ${cell(name)} | ${a[name] ?? ''} | ${r[name] ?? ''} |`);
      out.push('');
    };
    out.push('## Redis cost per task, by command', '');
    table('Calls per task (INFO commandstats, Lua-internal included)', (d) => d.topServer);
    table('Redis time per task, µs (a script includes its calls)', (d) => d.topServerUsec);
    table('Commands sent by the clients per task', (d) => d.topClient);
  }
  if (cost?.scripts) {
    const { rate, agentcom, raw } = cost.scripts;
    out.push(
      `### Redis time per script, at a steady ${rate} tasks/s (SLOWLOG, every command logged)`,
      '',
      "A script's time includes the commands it runs, which have rows of their own too (their calls inside scripts); SLOWLOG's own bookkeeping adds to every call.",
      '',
      '| system | script or command | calls per task | µs per call, p50 | µs per task |',
      '|---|---|---|---|---|',
    );
    for (const [system, rows] of [
      ['agentcom', agentcom],
      ['raw BullMQ', raw],
    ] as const) {
      for (const row of rows) {
        out.push(
          `| ${system} | ${cell(row.name)} | ${row.callsPerTask} | ${row.p50Us} | ${row.usPerTask} |`,
        );
      }
    }
    out.push('');
  }

  const profile = results.find((r) => r.bench === 'profile' && !r.error)?.details?.profile as
    ProfileSummary | undefined;
  if (profile) {
    out.push(
      "## Where a task's time goes in the hub (`--cpu-prof` of replica 1, measured window)",
      '',
    );
    out.push(
      `Main thread busy ${profile.busyPct}% of ${profile.windowMs} ms (${profile.samples} samples). Shares below are of the busy time.`,
      '',
    );
    out.push('| self time by package / area | ms | % |', '|---|---|---|');
    for (const c of profile.categories.slice(0, 14))
      out.push(`| ${cell(c.name)} | ${c.ms} | ${c.pct} |`);
    out.push('', '| function (self time) | where | package | ms | % |', '|---|---|---|---|---|');
    for (const f of profile.topSelf) {
      out.push(`| ${cell(f.fn)} | ${cell(f.where)} | ${cell(f.category)} | ${f.ms} | ${f.pct} |`);
    }
    out.push(
      '',
      '| agentcom function (inclusive, synchronous part only) | where | ms | % |',
      '|---|---|---|---|',
    );
    for (const f of profile.topAgentcomInclusive) {
      out.push(`| ${cell(f.fn)} | ${cell(f.where)} | ${f.ms} | ${f.pct} |`);
    }
    out.push('');
  }

  out.push(CHANGES, METHOD);
  return `${out.filter((line, i, all) => !(line === '' && all[i - 1] === '')).join('\n')}\n`;
}

const CHANGES = `## What the profile changed (issue 7)

The first full run (the "before" column) showed the hub bound by Redis round trips and a serial
dispatch loop, not by its own code: socket writes and ioredis were half of the busy time,
agentcom's code 6%; 28.5 round trips and 9 script calls per task; 834 tasks waited while 88
agents sat idle. Changed because of it:

- dispatch step: the runnable-job check, the claim and the assignment token in one script
  (\`claimIdle.lua\`), then BullMQ's fetch, then one compare-and-set that records the task and
  refuses a pending cancel: 3 round trips instead of 6 (no job-count precheck, no GET of the
  cancel request, no claim-then-release when the queue is empty);
- accept: one script instead of read + transition + lock extension;
- complete/fail: \`beginReport.lua\` (report lock, duplicate check, holder check, intent), BullMQ's
  completion without reading the job first, one transition that also writes the finished marker
  and drops the lock: 3 round trips instead of 10;
- \`DISPATCH_CONCURRENCY\` (8) dispatch steps per queue per replica instead of one;
- no BullMQ \`QueueEvents\` (a blocking read per few events on every replica): triggers are local,
  plus the safety tick;
- the command connection is auto-pipelined (ioredis), heartbeats read 5 fields (HMGET) instead
  of the whole record;
- pushes to agents on the same replica skip the Redis adapter's publish;
- the agents page tails the events stream only while a browser is connected (6–9% of the
  hub's time before).

A second pass (this session's profile and command counts) changed:

- Redis commands inside the scripts: a transition reads everything it checks with one HMGET and
  writes version and counters with the patch (no EXISTS, per-field HGET, HINCRBY); a release
  leaves only the indexes the record can be in; the completion intent is one \`SET … GET\`
  (96.8 → about 72 commands per task);
- a report that frees an agent claims the next one in the same script
  (\`transitionThenClaim.lua\`): one script call and round trip less per task under load;
- heartbeats are checked in 5 ms batches, one script per batch, which also records the
  heartbeat times (idle CPU per replica with 3,334 agents: 22.8% → about 13% of a core; the
  profile of an idle replica had ioredis and write syscalls at 40% of its busy time);
- the latency benchmark polls a sample of 1 task in 10 for "completed visible": polling every
  task loaded the replica it polled enough to triple the assignment p99 it measured alongside.

A third pass (the profile of the second: BullMQ's fetch and completion, each its own round trip
with its own JS around it, and the HTTP path were the largest items) changed:

- a dispatch step is one script, \`claimAndFetch\`: the claim, BullMQ's own \`moveToActive\` (its
  script text from the pinned bullmq package, composed in as a local function) and the task
  record, where it was claim, fetch, compare-and-set; a report that frees an agent runs the same
  step in its script;
- a plain completion is one script, \`completeAtOnce\`: the duplicate and holder checks, BullMQ's
  own \`moveToFinished\` (arguments from BullMQ's own builder), the agent's release and the next
  dispatch step, where it was report lock + intent, completion, release. Anything unusual
  (another report under way, a replay, a draining agent, BullMQ refusing) changes nothing and
  takes the step-by-step path. Script calls per task: 7.1 → 3.3 (create, accept, complete);
- the command connection is no longer auto-pipelined: ioredis sends an auto-pipeline from
  \`setImmediate\`, a turn of the event loop on every dispatch; with 3 calls per task the
  batching saved less than it cost (201 → assign p50 0.89 → 0.33 ms, p99 5.6 → 2.7 ms; round
  trips per task 1.2 → 3.5, still under 2× raw; Redis CPU per task +17%);
- \`POST /v1/tasks/batch\` (up to 500 tasks, one \`addBulk\` per queue) and a throughput run that
  uses it against raw BullMQ's \`addBulk\`: it shows the dispatch path without one HTTP request
  per task, which is about a third of a replica's time in the single-POST runs;
- the admin key's digest is computed once, not per request.

A fourth pass measured every change against the third pass's code in interleaved A/B runs (the
machine drifts by 30% within minutes, so only alternating runs compare), and kept what held up:

- a claim prefers, among the 8 longest-idle agents, one connected to its own replica, so the
  \`task:assign\` stays in the process instead of crossing the adapter's pub/sub: 201 → assign
  p50 0.33–0.44 ms against 0.57–0.72 ms, at 20 tasks/s 0.66–0.70 against 1.06–1.22 ms;
- a step that gets its task is one transition and one event (\`assign\`, idle → assigned), not
  two (\`claim\`, \`assign\`): one XADD and one HSET less per task; a step says whether another
  may assign (\`more\`), so an assigning step is no longer followed by one that finds nothing.
- dropped after measuring: adding a task and running its dispatch step in one script (ratio
  0.139 against 0.179: it claimed at the POST's replica, made the POST wait and added Redis
  commands), re-packing BullMQ's arguments from JSON in Lua (15–19 µs of Redis per call), and
  auto-pipelining the BullMQ connection (0.156 against 0.172). Throughput stayed where the third
  pass left it (ratio 0.167 against 0.165, four interleaved pairs).

A fifth pass (2026-11-22) went after the writes: on this VM every write(2) to loopback, and the
wake-up of the process it reaches, costs tens of microseconds of CPU. The \`command\` and
\`bullmq\` Redis connections now send the commands of a busy event-loop turn in one writev(2)
(\`hub/src/redis/write-coalescer.ts\`: the first command of a turn leaves at once, the rest are
corked until \`setImmediate\`). Interleaved A/B runs against the fourth pass, 100 agents: Redis
reads per task 0.50 → 0.37, CPU per task of all processes 1,750 → 1,612 µs, tasks/s 1,105 →
1,208 (4 pairs); 500 agents: 2,019 → 1,889 µs, 956 → 1,027 tasks/s (3 pairs); one POST alone on
one replica: Redis CPU per POST 74 → 48–60 µs. The assignment latency is unchanged (a variant
that corked the first command too added 0.15–0.5 ms to the p50). Dropped after measuring: the
submitter on undici instead of \`node:http\` (harness only; ≈ 150 µs per POST either way) and a
larger V8 young generation for the hubs (\`--max-semi-space-size=32\`: slower in 3 pairs of 3).

A sixth pass (2026-11-22) changed how throughput is measured, and then the hub. It adds the
**transport floor**: the same load through stand-in replicas (\`test/bench/floor-hub.ts\`) that
speak the hub's protocol with its libraries and options (Fastify, Socket.IO, websocket only) and do
nothing else: no Redis, no validation, no state machine. It is the most any hub on this stack and
protocol could reach here. Raw BullMQ, the floor and the hubs now stay up side by side and are
measured in turn, in rounds whose order rotates, with the other two paused (SIGSTOP: idle, a warm
hub cluster still costs about 8% of a core); ratios are the median of the per-round ratios. Each
warms up with 10,000 tasks first: a fresh cluster's hub CPU per task falls from about 3,300 µs
over its first 1,500 tasks to about 1,000 µs by 9,000 and 880 µs by 12,000 (the floor's from 1,360
to 300 by 10,500), so the 1,000 of before measured half-warm hubs. A profile of a warm replica then showed a sixth of its time in
ioredis building commands (\`Array.prototype.flat\` copying the arguments, and a command with a
Buffer among its arguments encoded piece by piece: about 60 µs for a completion's 90 arguments);
agentcom's scripts are now encoded in one pass (\`hub/src/redis/script-command.ts\`, about 11 µs),
and the admin key is compared padded in constant time instead of hashed per request. Interleaved
runs against the fifth pass (4 pairs): hub CPU per task 821 → 740 µs, all processes 1,544 → 1,413
µs, 1,212 → 1,324 tasks/s.

A seventh pass (2026-11-22) looked at where the CPU goes on-CPU: \`perf record -e cpu-clock\`
with the hubs' JIT symbols. \`--cpu-prof\` counts time spent waiting for a CPU, so syscalls look
more expensive than they are. It also timed Redis per script with Redis at real-time priority.
- \`completeAtOnce\` is two thirds of Redis's time per task, with a median of 270 µs per call.
  About half of that is BullMQ's own \`moveToFinished\` and \`moveToActive\`; the rest is spread
  over agentcom's release and claim.
- No single command or step stands out. A replica's time is spread the same way: agentcom's own
  modules are 16% of it.
- Two Redis commands per task are gone: a completion's two \`EXISTS\` are now one, and a
  release no longer runs \`HGET queues\`. Commands per task went from 65.3 to 63.3.
- The hubs' CPU per task was found to level off only from about 15,000 tasks on. Each system now
  warms up with 20,000 tasks, before the rounds and unpaused (see the method).
- Dropped after measuring: adding jobs without \`Queue.add\`, with BullMQ's own argument builder
  and scripts (53 → 48 µs of CPU per add in a loop, not visible in throughput).

An eighth pass (2026-11-22) found V8's garbage collector at 10% of a warm replica's on-CPU
samples. Under load a replica promoted about 5 MB/s of objects that live milliseconds (a task's
Redis command arguments, the transition spec, BullMQ's completion arguments) and ran a full
mark-compact every 7–8 s. V8 had pretenured their allocation sites during the replica's first
seconds, when its young generation was small. A replica now starts with
\`--no-allocation-site-pretenuring\` (\`hub/src/v8-flags.ts\`): it promotes a quarter as much,
and hub CPU per task was 4–15% lower in four of five interleaved A/B runs (one showed +4%).
A larger young generation and \`--single-threaded-gc\` changed nothing measurable.

A tenth pass (2026-12-07) timed Redis per script: SLOWLOG with every command logged (now part
of the Redis-cost benchmark), and \`TIME\` marks inside \`completeAtOnce\` for one run, at 500
tasks/s. A completion's script spent 58 µs in BullMQ's own \`moveToFinished\`, 37 in the agent's
release (the spec's JSON decode the largest part, about 7), 9 in its checks and 11 in the next
dispatch step when that found nothing (62 when it assigned). It also showed 2.04 dispatch steps per
task where one assigns: a report that freed an agent asked for a step in each of the agent's queues,
though its own script had just run the step of the task's queue. It now asks for the agent's other
queues only (\`test/integration/freed-agent.int.test.ts\`). At 500 tasks/s: script calls per task
5.05 → 4.11, Redis commands per task 83.3 → 78.0; Redis CPU per task at 200, 500 and 1,000 tasks/s
700 → 593, 612 → 453 and 418 → 387 µs (one pair each). At full speed the difference is inside
the noise: two interleaved pairs of the throughput benchmark gave ratios of 0.220 and 0.217
against 0.230 and 0.243 (100 agents), 0.229 and 0.241 against 0.231 and 0.235 (500 agents).
`;

const METHOD = `## Method

Every benchmark starts its own \`redis-server\` (loopback, no persistence), real hub processes
(\`node hub/dist/main.js\`, \`LOG_LEVEL=warn\`, default timings unless said), and a separate load
process with the simulated agents (\`test/bench/load-agents.ts\`): real socket.io-client
connections to \`/agent\`, websocket transport, the real handshake with tokens minted by
\`POST /v1/agents\`, \`task:accept\` then \`task:complete\` with acks, heartbeats every 5 s, the
sidecar's reconnect policy. Raw BullMQ (\`test/bench/raw-bullmq.ts\`) runs in its own process on the
same Redis, with the job options the hub uses (uuid job id, 3 attempts, the hub's retention) and a
\`Worker\` with a no-op processor at the agents' concurrency. All processes are killed at the end.

- **Throughput**: tasks POSTed by the benchmark process (48 in flight, round-robin over the
  replicas) while the agents work; end to end = first POST → last \`task:complete\` acknowledged.
  Raw: 48 \`Queue.add\` in flight while the worker runs, first add → last \`completed\` event.
  The transport floor: the same agents and submitter against 3 stand-in replicas
  (\`test/bench/floor-hub.ts\`: Fastify + Socket.IO with the hub's options, a task held in memory
  and pushed to an idle agent of the same process, accepts and completions answered at once).
  Raw, floor and hubs run side by side, each warmed up with 20,000 tasks (submitted as its rounds
  submit them, before the rounds, nothing paused), then one round run as the measured ones and
  discarded (each system sat idle through the others' warm-ups, and the first round after that
  was the slowest for all three, raw BullMQ most), then measured in 4
  rounds of 5,000 tasks each, the order rotating, the two not measured paused with SIGSTOP (their
  CPU meanwhile is shown: 0 when the pause held); tasks/s are the median round, ratios the median
  of the ratios within a round.
  The batch run: \`POST /v1/tasks/batch\` of 50 tasks, 4 requests in flight; raw: \`Queue.addBulk\`
  of 50, 4 in flight.
  CPU per task from \`/proc/<pid>/stat\` over the window; each hub's event-loop utilization and
  delay (p99) over the window from a preload (\`test/bench/redis-io-counter.ts\`).
- **Latency**: POSTs at a steady rate from the load process itself, so the POST, its 201, the
  \`task:assign\` and the completion are timed on one monotonic clock; "201 → assign" counts 0 when
  the assignment arrived before the 201. "Completed visible" = 201 → the first
  \`GET /v1/tasks/:id\` showing \`completed\`, issued right after the complete ack, for 1 task
  in 10. Raw: \`Queue.add\`
  called → processor started, same process.
- **Redis cost**: all commands = delta of \`INFO commandstats\` calls (Redis counts each
  \`redis.call\` inside a script as well as the EVALSHA), without the benchmark's own INFO calls.
  Client commands and round trips are counted in each client process by a preload
  (\`test/bench/redis-io-counter.ts\`) that wraps \`net.Socket.prototype.write\` for connections to
  that Redis: RESP commands written, and write calls (ioredis sends a command, a pipeline or a
  MULTI block in one write: one round trip). Lua-internal = all − client commands. Redis 7.0
  counts script-internal calls in \`total_commands_processed\` too (kept as a cross-check) and has no
  per-client command counter in \`CLIENT LIST\`, hence the client-side count. The window
  includes background work (heartbeats, sweeper, stalled checker), whose idle rate is shown.
  Redis CPU per task (\`INFO cpu\`, user + sys) falls steeply with the rate: each wake-up of an idle
  Redis costs it more than the commands it then runs. At full speed raw BullMQ runs several times
  faster than agentcom, so the two full-speed figures compare two loads; the same-rate figure runs
  each at one steady rate (1,000 tasks/s, 400 with QUICK=1) and compares like with like.
  Redis time per script: each again at a steady 500 tasks/s (200 with QUICK=1) for 4 s with
  \`slowlog-log-slower-than 0\`; SLOWLOG's entries grouped by script (EVALSHA's SHA1 against the
  built hub's composed scripts and the installed bullmq's) or command.
- **Connections**: hub RSS growth per agent on each replica (\`VmRSS\`, averaged samples, before and
  after the agents connected), Redis \`used_memory\` growth / agents, CPU per replica over a window
  with all agents idle and heartbeating.
- **Failover**: kill -9 of replica 1 during a steady flow; per agent of that replica, disconnect
  → connected elsewhere; every task accepted with a 201 checked through \`GET /v1/tasks/:id\`.
  **Dead agent**: kill -9 of a real sidecar process running a task; time until another agent
  receives it (\`task:assign\`) and until the API shows it there.
- **Profile**: replica 1 of a throughput run under \`node --cpu-prof\`; samples inside the
  measured window only, self time by package (from the script URL) and function.
`;

main().catch((err: unknown) => {
  log(`bench runner failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});
