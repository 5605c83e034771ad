--[[
  claimAndFetch: a whole dispatch step in one call. `claimIdle` claims the longest-idle agent
  (idle -> assigned, new assignment token), BullMQ's own `moveToActive` fetches the next job of
  the claim's queue with the token as the job's lock, and the task is recorded on the agent
  with the claim: one transition idle -> assigned, one event (reason `assign`, with the task),
  where three separate calls took two transitions (`claim`, then `assign`), with two round trips
  between them and a window in which a replica could die holding a fetched job its agent record
  does not name. A step that hands out no task records the claim alone (reason `claim`).

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
  ARGV[11]    cancel-request key prefix (key = prefix .. queue .. ":" .. taskId)

  Returns:
    false                                                         nothing claimed
    { agentId, version, queues, queue, token, socketId, idleSince, "assigned", jobId, job, more }
                                                                  recorded; `version` after it;
                                                                  job = the job hash (flat);
                                                                  more = 1 when ARGV[7]'s queue
                                                                  has another job waiting and
                                                                  an idle agent (another step
                                                                  may assign), else 0
    { agentId, version, queues, queue, token, socketId, idleSince, "fetched", jobId }
                                                      claimed and fetched, not recorded
    { agentId, version, queues, queue, token, socketId, idleSince, "claimed", false }
                                                      claimed, nothing fetched
  (idleSince: see claimIdle)
]]
local claim = claimIdle(KEYS, ARGV, true)
if not claim then
  return false
end
local agentId, version, queue, token, socketId, idleSince, record =
  claim[1], claim[2], claim[4], claim[5], claim[6], claim[7], claim[8]
local base = ARGV[8] .. queue .. ":"
local fetched = moveToActive({
  base .. "wait", base .. "active", base .. "prioritized", base .. "events",
  base .. "stalled", base .. "limiter", base .. "delayed", base .. "paused",
  base .. "meta", base .. "pc", base .. "marker",
}, { base, ARGV[3], cmsgpack.pack({ token = token, lockDuration = tonumber(ARGV[10]) }) })

local job, jobId = fetched[1], fetched[2]
if type(job) ~= "table" or not jobId or jobId == 0 then
  record({}, "claim", "")
  return { agentId, version, claim[3], queue, token, socketId, idleSince, "claimed", false }
end

local data
for i = 1, #job, 2 do
  local field = job[i]
  if field == "data" then
    data = job[i + 1]
  elseif field == "defa" then
    record({}, "claim", "")
    return { agentId, version, claim[3], queue, token, socketId, idleSince, "fetched", jobId }
  end
end
if redis.call("EXISTS", ARGV[11] .. queue .. ":" .. jobId) == 1 then
  record({}, "claim", "")
  return { agentId, version, claim[3], queue, token, socketId, idleSince, "fetched", jobId }
end

-- the task's run timeout, when it has one (decoded only when the data names one)
local timeoutMs
if data and string.find(data, '"timeoutMs"', 1, true) then
  local ok, decoded = pcall(cjson.decode, data)
  if ok and type(decoded) == "table" and type(decoded.timeoutMs) == "number" then
    timeoutMs = decoded.timeoutMs
  end
end

if timeoutMs then
  record({ "taskId", jobId, "taskTimeoutMs", string.format("%d", timeoutMs) }, "assign", jobId)
else
  record({ "taskId", jobId }, "assign", jobId)
end

-- Is another step worth a round trip? Only with an idle agent left and a job of the step's
-- queue waiting. (Delayed jobs that were due are waiting now: moveToActive promoted them.)
local more = 0
if redis.call("ZCARD", KEYS[1]) > 0 then
  local stepBase = ARGV[8] .. ARGV[7] .. ":"
  if redis.call("LLEN", stepBase .. "wait") > 0
    or redis.call("ZCARD", stepBase .. "prioritized") > 0 then
    more = 1
  end
end
return { agentId, version, claim[3], queue, token, socketId, idleSince, "assigned", jobId, job,
  more }
