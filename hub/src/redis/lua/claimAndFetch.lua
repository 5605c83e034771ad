--[[
  claimAndFetch: a whole dispatch step in one call. `claimIdle` claims the longest-idle agent
  (idle -> assigned, new assignment token), BullMQ's own `moveToActive` fetches the next job of
  the claim's queue with the token as the job's lock, and the task is recorded on the agent
  (assigned -> assigned, reason `assign`): the same two transitions and events as three separate
  calls, without the two round trips between them and without the window in which a replica
  could die holding a fetched job its agent record does not name.

  This file is the body of a script that scripts.ts composes: `claimIdle.lua` and BullMQ's
  `moveToActive` (its own script text, from the installed bullmq package) come first, each
  wrapped as a local function of (KEYS, ARGV).

  A job the step must not hand out as it is (an operator asked to cancel it, or BullMQ marked
  it to fail: `defa`, stalled too often) is fetched and locked but not recorded: the caller
  fails it and carries on (`fetched`). When BullMQ hands out nothing although the claim saw a
  runnable job (a rate limit or a maxed queue), the agent stays claimed (`claimed`) and the
  caller frees it.

  KEYS[1..3]  claimIdle's keys (idle set of the queue, events stream, ack deadlines)

  ARGV[1..9]  claimIdle's ARGV
  ARGV[10]    lock duration of the fetched job (ms): the lease
  ARGV[11]    cancel-request key prefix (key = prefix .. taskId)

  Returns:
    false                                                         nothing claimed
    { agentId, version, queues, queue, token, "assigned", jobId, job, more }
                                                                  recorded; `version` after it;
                                                                  job = the job hash (flat);
                                                                  more = 1 when ARGV[7]'s queue
                                                                  has another runnable job and
                                                                  an idle agent (another step
                                                                  may assign), else 0
    { agentId, version, queues, queue, token, "fetched", jobId }  claimed and fetched, not recorded
    { agentId, version, queues, queue, token, "claimed", false }  claimed, nothing fetched
]]
local claim = claimIdle(KEYS, ARGV)
if not claim then
  return false
end
local agentId, version, queue, token = claim[1], claim[2], claim[4], claim[5]
local base = ARGV[8] .. queue .. ":"
local fetched = moveToActive({
  base .. "wait", base .. "active", base .. "prioritized", base .. "events",
  base .. "stalled", base .. "limiter", base .. "delayed", base .. "paused",
  base .. "meta", base .. "pc", base .. "marker",
}, { base, ARGV[3], cmsgpack.pack({ token = token, lockDuration = tonumber(ARGV[10]) }) })

local job, jobId = fetched[1], fetched[2]
if type(job) ~= "table" or not jobId or jobId == 0 then
  return { agentId, version, claim[3], queue, token, "claimed", false }
end

local data
for i = 1, #job, 2 do
  local field = job[i]
  if field == "data" then
    data = job[i + 1]
  elseif field == "defa" then
    return { agentId, version, claim[3], queue, token, "fetched", jobId }
  end
end
if redis.call("EXISTS", ARGV[11] .. jobId) == 1 then
  return { agentId, version, claim[3], queue, token, "fetched", jobId }
end

-- the task's run timeout, when it has one (decoded only when the data names one)
local timeoutMs
if data and string.find(data, '"timeoutMs"', 1, true) then
  local ok, decoded = pcall(cjson.decode, data)
  if ok and type(decoded) == "table" and type(decoded.timeoutMs) == "number" then
    timeoutMs = decoded.timeoutMs
  end
end

version = version + 1
local agentKey = ARGV[1] .. agentId
if timeoutMs then
  redis.call("HSET", agentKey, "taskId", jobId, "taskTimeoutMs", string.format("%d", timeoutMs),
    "version", version)
else
  redis.call("HSET", agentKey, "taskId", jobId, "version", version)
end
redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[6], "*",
  "agent", agentId, "from", "assigned", "to", "assigned",
  "reason", "assign", "task", jobId, "hub", ARGV[5],
  "version", version, "at", ARGV[3])

-- Is another step worth a round trip? Only with an idle agent left and a job of the step's
-- queue still runnable (claimIdle's test, pause aside: a paused queue costs one empty step).
local more = 0
if redis.call("ZCARD", KEYS[1]) > 0 then
  local stepBase = ARGV[8] .. ARGV[7] .. ":"
  if redis.call("LLEN", stepBase .. "wait") > 0
    or redis.call("ZCARD", stepBase .. "prioritized") > 0 then
    more = 1
  else
    local due = redis.call("ZRANGE", stepBase .. "delayed", 0, 0, "WITHSCORES")
    if due[2] ~= nil and math.floor(tonumber(due[2]) / 4096) <= tonumber(ARGV[3]) then
      more = 1
    end
  end
end
return { agentId, version, claim[3], queue, token, "assigned", jobId, job, more }
