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
    read before them was taken first); it can list again jobs read before only when both were
    removed from the middle (cancelled, or finished while older ones ran on, in active). A job
    removed and added again under the same id (agentcom's ids are random UUIDs) would pass for
    one that stayed. LPOS is O(jobs before the one found), ids only.

  KEYS[1]  the list or sorted set
  ARGV[1]  how many ids at most
  ARGV[2]  prefix of the queue's BullMQ keys (job hash = prefix .. id, same hash tag as KEYS[1])
  ARGV[3]  id of the last job read ("": none, start at the oldest)
  ARGV[4]  list: its stay; sorted set: its score
  ARGV[5]  list: id of the job after it
  ARGV[6]  list: its stay

  Returns { ids, more }: ids oldest first; more empty when no job follows them, else where they
  end: list { stay of the last id, next id, stay of the next id }; sorted set { score of the
  last id, as text }
]]
local key, count, jobPrefix, last = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
local kind = redis.call("TYPE", key)["ok"]

local function stay(id)
  local job = jobPrefix .. id
  return (redis.call("HGET", job, "ats") or "0") .. ":" .. redis.call("HSTRLEN", job, "stacktrace")
end

if kind == "list" then
  local len = redis.call("LLEN", key)
  local from = 0 -- distance from the tail of the first id to read
  if last ~= "" then
    local at = redis.call("LPOS", key, last, "RANK", -1)
    if at and stay(last) == ARGV[4] then
      from = len - at
    else
      at = redis.call("LPOS", key, ARGV[5], "RANK", -1)
      if at and stay(ARGV[5]) == ARGV[6] then from = len - 1 - at end
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

local start = 0
if last ~= "" then
  -- ids of the last score read are at [lo, hi)
  local lo = redis.call("ZCOUNT", key, "-inf", "(" .. ARGV[4])
  local hi = redis.call("ZCOUNT", key, "-inf", ARGV[4])
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if after(redis.call("ZRANGE", key, mid, mid)[1], last) then hi = mid else lo = mid + 1 end
  end
  start = lo
end
-- one more than asked for: whether a job follows
local flat = redis.call("ZRANGE", key, start, start + count, "WITHSCORES")
local ids = {}
for i = 1, math.min(#flat, 2 * count), 2 do ids[#ids + 1] = flat[i] end
if #flat <= 2 * count then return { ids, {} } end
return { ids, { flat[2 * count] } }
