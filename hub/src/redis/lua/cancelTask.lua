--[[
  cancelTask: an operator's cancel of a task, in one call, so that it is atomic against the
  task's completion (a cancel that read the job's state, then removed it, removed a task that
  completed in between and showed it `cancelled`). By the job's state as it is now:
  - completed, or failed: nothing is changed; the caller answers as for a finished task.
  - active (locked, or in the active list): the cancel request is written; the caller tells the
    agent that holds the lock (its token is returned) to stop.
  - waiting, delayed, prioritized after an attempt (a retry waiting for its backoff, a task put
    back to wait): failed as cancelled where it is, as a running task's cancel ends: it keeps
    its logs and its attempts, and can be retried (removed, it lost them, and a retry was
    refused as for a task cancelled before it ran). The cancel request is written too, as for
    a running task.
  - waiting, delayed, prioritized before any attempt: BullMQ's own `removeJob` removes the job
    and the record of the cancelled task is written. Its idempotency key is kept (BullMQ drops
    it on removal), so a repeated create answers this task, `cancelled`, instead of creating
    another.
  Either way the task is finished: its idempotency key, which named it for longer than any task
  waits, now expires ARGV[8] after the cancel (`settleIdempotencyKey`). A settle Redis refuses
  (an ACL that denies the key's write, OOM) is caught and returned for the caller to run again
  later, as `completeAtOnce` does: raised, it failed the script after the cancel was applied, the
  cancel was answered as an error, and the key kept its ten years. (On the removal path BullMQ's
  `removeJob` deletes the key first; a settle refused there is run again late, which does not
  create a key that is gone: the key is then freed, as by an operator's removal.)

  This file is the body of a script that scripts.ts composes: BullMQ's `removeJob` (its own
  script text, from the installed bullmq package) and `settleIdempotencyKey` come first, as
  local functions of (KEYS, ARGV).

  KEYS[1]  the job's hash (BullMQ)
  KEYS[2]  the queue's repeat key (BullMQ; removeJob's second key)
  KEYS[3]  the record of a task cancelled before it ran
  KEYS[4]  the task's cancel request

  ARGV[1]  task id
  ARGV[2]  the queue's BullMQ key prefix (BullMQ prefix .. queue .. ":")
  ARGV[3]  the record (JSON), written when the job is removed
  ARGV[4]  the reason, the value of the cancel request
  ARGV[5]  TTL of the record and of the cancel request (ms)
  ARGV[6]  the failed reason of a task failed as cancelled (`[cancelled] ` .. reason)
  ARGV[7]  now (ms)
  ARGV[8]  how long the idempotency key of a task cancelled here outlives the cancel (ms)

  Returns:
    { "gone" }                    no such job (removed or trimmed since the caller read it)
    { "completed" }
    { "failed", failedReason }
    { "running", token or false } the cancel request is written
    { "removed", unsettled }      removed, its record written
    { "cancelled", unsettled }    failed as cancelled (it had been started before)
  where unsettled is false, or { idempotency key, error } when its settle was refused.
]]
local jobKey, taskId, prefix = KEYS[1], ARGV[1], ARGV[2]

-- Settles the key `dedupId` (see above): false, or { dedupId, error } when Redis refused it
local function settleCaught(dedupId)
  local settled, err = pcall(settleIdempotencyKey, { jobKey },
    { taskId, prefix, ARGV[8], ARGV[7], dedupId })
  if settled then
    return false
  end
  -- a string in Redis 7.0, a table { err = ... } in later versions
  return { dedupId, type(err) == "table" and tostring(err.err) or tostring(err) }
end

if redis.call("EXISTS", jobKey) == 0 then
  return { "gone" }
end
if redis.call("ZSCORE", prefix .. "completed", taskId) then
  return { "completed" }
end
if redis.call("ZSCORE", prefix .. "failed", taskId) then
  return { "failed", redis.call("HGET", jobKey, "failedReason") or "" }
end
local token = redis.call("GET", jobKey .. ":lock")
if token or redis.call("LPOS", prefix .. "active", taskId) then
  redis.call("SET", KEYS[4], ARGV[4], "PX", ARGV[5])
  return { "running", token or false }
end

-- Started before: failed as cancelled where it waits (the steps of BullMQ's own failure that
-- apply to a job nobody holds: out of the wait list or sets, into the failed set, an event)
local started = tonumber(redis.call("HGET", jobKey, "ats") or "0") > 0
  or tonumber(redis.call("HGET", jobKey, "atm") or "0") > 0
if started then
  local prev = "waiting"
  if redis.call("ZREM", prefix .. "delayed", taskId) == 1 then
    prev = "delayed"
  elseif redis.call("ZREM", prefix .. "prioritized", taskId) == 1 then
    prev = "prioritized"
  else
    redis.call("LREM", prefix .. "wait", 0, taskId)
    redis.call("LREM", prefix .. "paused", 0, taskId)
  end
  redis.call("HSET", jobKey, "failedReason", ARGV[6], "finishedOn", ARGV[7])
  redis.call("ZADD", prefix .. "failed", ARGV[7], taskId)
  redis.call("XADD", prefix .. "events", "*", "event", "failed", "jobId", taskId,
    "failedReason", ARGV[6], "prev", prev)
  redis.call("SET", KEYS[4], ARGV[4], "PX", ARGV[5])
  local dedupId = redis.call("HGET", jobKey, "deid")
  return { "cancelled", dedupId and settleCaught(dedupId) or false }
end

-- BullMQ's removal drops the job's deduplication key (and its hash): it is set again after
local dedupId = redis.call("HGET", jobKey, "deid")
local removed = removeJob({ jobKey, KEYS[2] }, { taskId, "0", prefix })
if removed ~= 1 then
  return redis.error_reply("cancelTask: BullMQ's removeJob answered " .. tostring(removed))
end
local unsettled = dedupId and settleCaught(dedupId) or false
redis.call("SET", KEYS[3], ARGV[3], "PX", ARGV[5])
return { "removed", unsettled }
