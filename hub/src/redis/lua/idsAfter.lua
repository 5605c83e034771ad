--[[
  idsAfter: the next job ids of one BullMQ list (wait, active) or sorted set (delayed,
  prioritized, completed, failed) after a position a task listing stopped at, oldest first, in
  one atomic read (a list's indexes move while it is read: an index found, then read from, in two
  calls could be off by the jobs pushed or popped in between). BullMQ keys, read only.

  Oldest first: a list from its tail (BullMQ pushes new jobs at the head and takes the next job
  from the tail) to its head; a sorted set by score, then by id (bytes), as Redis orders it.

  A position is not an index, so it stays put while jobs come and go:
  - in a sorted set, the score and id of the last job read: the walk goes on with what sorts
    after them, whether or not that job is still there (ZCOUNT finds the ids of that score, a
    binary search among them the first one after it).
  - in a list, the last job read and the one after it, each with its stay: its `ats` (runs
    started: BullMQ adds one whenever it moves the job to active, the only way out of wait and
    into active but removal) and the length of its `stacktrace` (an operator's retry clears `ats`,
    but only after a failure, which added a trace). A job found with the stay it had is still
    where it was: jobs are only pushed at either end of a list, or removed, and the others never
    move relative to each other (a job that left and came back is at an end, with another stay).
    So the walk goes on after the last job read when it stayed, else at the one after it when
    that one stayed (nothing was between them), else from the tail. The tail misses nothing, and
    repeats nothing when both left because they were taken from the tail (dispatch: every job
    read before them was taken first); it lists again the jobs read before them that are still
    there when both were removed from the middle (cancelled, or finished while older ones ran
    on, in active). No position of bounded size avoids that: telling, of the jobs that stayed,
    those read from those not read once the two around the position are gone takes a mark for
    each of them (nothing in a job or in the list says when it was pushed). A job removed and
    added again under the same id (agentcom's ids are random UUIDs) would pass for one that
    stayed. LPOS is O(jobs before the one found), ids only.

  A job whose id is too long for a cursor (an outside producer's; the listing's cursor carries
  ids of up to a task id's length) is named by a byte prefix of its id, the SHA-1 of its id and
  its length in bytes instead. In a list it is found by reading the list from its tail a chunk
  at a time (no command finds an element by digest), as LPOS would, O(jobs before it), only ids
  of its length and prefix hashed (about ten times LPOS's time: some 20 ms with 100,000 jobs
  before it, against 2). In a sorted set the binary search finds the first id of the
  score from the prefix on, then the job among the ids of that score and prefix (one but for
  ids of one score and a long common prefix); if it is gone, the walk goes on from the first of
  them (it may list again those read; it misses none).

  KEYS[1]  the list or sorted set
  ARGV[1]  how many ids at most
  ARGV[2]  prefix of the queue's BullMQ keys (job hash = prefix .. id, same hash tag as KEYS[1])
  ARGV[3]  last job read: its id ("": none, start at the oldest), or a byte prefix of it
  ARGV[4]  "" when ARGV[3] is the id, else the SHA-1 of the id (hex)
  ARGV[5]  with a SHA-1: the length of the id in bytes
  ARGV[6]  list: its stay; sorted set: its score
  ARGV[7..9] list: the job after it, as ARGV[3..5]
  ARGV[10] list: its stay

  Returns { ids, more }: ids oldest first; more empty when no job follows them, else where they
  end: list { stay of the last id, next id, stay of the next id }; sorted set { score of the
  last id, as text }
]]
local key, count, jobPrefix = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local kind = redis.call("TYPE", key)["ok"]

-- the job ARGV[at..at+2] names: an id, or a prefix, a SHA-1 and a length
local function named(at)
  return { text = ARGV[at], sha1 = ARGV[at + 1], bytes = tonumber(ARGV[at + 2]) }
end
local last = named(3)

local function startsWith(id, prefix)
  return string.sub(id, 1, #prefix) == prefix
end

-- whether `id` is the job a digest names
local function digested(job, id)
  return #id == job.bytes and startsWith(id, job.text) and redis.sha1hex(id) == job.sha1
end

local function stay(id)
  local job = jobPrefix .. id
  return (redis.call("HGET", job, "ats") or "0") .. ":" .. redis.call("HSTRLEN", job, "stacktrace")
end

if kind == "list" then
  local len = redis.call("LLEN", key)
  -- the index from the head of a named job, nearest the tail, and its id; nil when not there
  local function find(job)
    if job.sha1 == "" then return redis.call("LPOS", key, job.text, "RANK", -1), job.text end
    local CHUNK, seen = 256, 0
    while seen < len do
      local chunk = redis.call("LRANGE", key, -(seen + CHUNK), -(seen + 1))
      for i = #chunk, 1, -1 do
        if digested(job, chunk[i]) then return len - 1 - seen - (#chunk - i), chunk[i] end
      end
      seen = seen + #chunk
    end
  end
  -- whether the job is where it was: found, with the stay it had
  local function stayed(job, hadStay)
    local at, id = find(job)
    if at and stay(id) == hadStay then return at end
  end

  local from = 0 -- distance from the tail of the first id to read
  if last.text ~= "" or last.sha1 ~= "" then
    local at = stayed(last, ARGV[6])
    if at then
      from = len - at
    else
      at = stayed(named(7), ARGV[10])
      if at then from = len - 1 - at end
    end
  end
  if from >= len then return { {}, {} } end
  -- one more than asked for: the job after the last one
  local range = redis.call("LRANGE", key, -(from + count + 1), -(from + 1))
  local ids = {}
  for i = #range, 1, -1 do ids[#ids + 1] = range[i] end
  if #ids <= count then return { ids, {} } end
  local nextId = table.remove(ids)
  return { ids, { stay(ids[count]), nextId, stay(nextId) } }
end

if kind ~= "zset" then return { {}, {} } end

-- Lua compares strings with strcoll (Redis sets LC_COLLATE from the environment): bytes here,
-- as Redis orders the ids of one score
local function after(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

local function idAt(rank)
  return redis.call("ZRANGE", key, rank, rank)[1]
end

local start = 0
if last.text ~= "" or last.sha1 ~= "" then
  -- ids of the last score read are at [lo, hi)
  local lo = redis.call("ZCOUNT", key, "-inf", "(" .. ARGV[6])
  local hi = redis.call("ZCOUNT", key, "-inf", ARGV[6])
  local scoreEnd = hi
  -- the first id after the last one read; with a digest, the first from its prefix on
  local whole = last.sha1 == ""
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local id = idAt(mid)
    if (whole and after(id, last.text)) or (not whole and not after(last.text, id)) then
      hi = mid
    else
      lo = mid + 1
    end
  end
  start = lo
  if not whole then
    -- the ids of that score with that prefix follow: the last one read among them, or none
    local rank, id = lo, idAt(lo)
    while rank < scoreEnd and startsWith(id, last.text) do
      if digested(last, id) then
        start = rank + 1
        break
      end
      rank = rank + 1
      id = idAt(rank)
    end
  end
end
-- one more than asked for: whether a job follows
local flat = redis.call("ZRANGE", key, start, start + count, "WITHSCORES")
local ids = {}
for i = 1, math.min(#flat, 2 * count), 2 do ids[#ids + 1] = flat[i] end
if #flat <= 2 * count then return { ids, {} } end
return { ids, { flat[2 * count] } }
