--[[
  cancelTask: an operator's cancel of a task, in one call, so that it is atomic against the
  task's completion (a cancel that read the job's state, then removed it, removed a task that
  completed in between and showed it `cancelled`). By the job's state as it is now:
  - completed, or failed: nothing is changed; the caller answers as for a finished task.
  - active (locked, or in the active list): the cancel request is written; the caller tells the
    agent that holds the lock (its token is returned) to stop.
  - waiting, delayed, prioritized (anything else): BullMQ's own `removeJob` removes the job and
    the record of the cancelled task is written. Its idempotency key is kept for the rest of
    its TTL (BullMQ drops it on removal), so a repeated create answers this task, `cancelled`,
    instead of creating another.

  This file is the body of a script that scripts.ts composes: BullMQ's `removeJob` (its own
  script text, from the installed bullmq package) comes first, as a local function of
  (KEYS, ARGV).

  KEYS[1]  the job's hash (BullMQ)
  KEYS[2]  the queue's repeat key (BullMQ; removeJob's second key)
  KEYS[3]  the record of a task cancelled before it ran
  KEYS[4]  the task's cancel request

  ARGV[1]  task id
  ARGV[2]  the queue's BullMQ key prefix (BullMQ prefix .. queue .. ":")
  ARGV[3]  the record (JSON), written when the job is removed
  ARGV[4]  the reason, the value of the cancel request
  ARGV[5]  TTL of the record and of the cancel request (ms)

  Returns:
    { "gone" }                    no such job (removed or trimmed since the caller read it)
    { "completed" }
    { "failed", failedReason }
    { "running", token or false } the cancel request is written
    { "removed" }                 removed, its record written
]]
local jobKey, taskId, prefix = KEYS[1], ARGV[1], ARGV[2]

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

-- BullMQ's removal drops the job's deduplication key: it is put back with the TTL it had left
local dedupKey, dedupTtl
local dedupId = redis.call("HGET", jobKey, "deid")
if dedupId then
  dedupKey = prefix .. "de:" .. dedupId
  if redis.call("GET", dedupKey) == taskId then
    dedupTtl = redis.call("PTTL", dedupKey)
  end
end

local removed = removeJob({ jobKey, KEYS[2] }, { taskId, "0", prefix })
if removed ~= 1 then
  return redis.error_reply("cancelTask: BullMQ's removeJob answered " .. tostring(removed))
end
if dedupTtl and dedupTtl > 0 then
  redis.call("SET", dedupKey, taskId, "PX", dedupTtl)
end
redis.call("SET", KEYS[3], ARGV[3], "PX", ARGV[5])
return { "removed" }
