--[[
  settleIdempotencyKey: sets how long a task's idempotency key lives from the task's state, so
  that the key names the task for as long as the task is not finished, and for `ttl` after it
  finished (its outcome is then answered from the finished marker, which lives as long). The key
  is BullMQ's deduplication key (`de:<idempotency key>`, holding the task id):
  - not finished (waiting, delayed, prioritized, active; a retry put it back): expires after
    ARGV[6], longer than any task waits, as tasks are created with (BullMQ's TTL mode: BullMQ
    deletes a key without expiry when the job completes or fails); a missing one is taken back.
  - finished (in the completed or failed set; or gone: removed at its end by a retention of 0, or
    cancelled before it ran): expires `ttl` after the end (the job's `finishedOn`; now when it is
    gone, as the caller runs this right after the end). BullMQ's removal deletes the key: it is
    set again. Run late (ARGV[7]), a gone job's key is only shortened, never created: see there.
  A key that names another task (one created with it after this one's key was gone) is left as it
  is. Idempotent: the expiry is computed from the end, whenever this runs.

  Runs alone (`IdempotencyKeys`) or as a local function of a script that ends a task
  (`completeAtOnce`, `cancelTask`; scripts.ts composes them).

  KEYS[1]  the job's hash (BullMQ)

  ARGV[1]  task id
  ARGV[2]  the queue's BullMQ key prefix (BullMQ prefix .. queue .. ":")
  ARGV[3]  how long the key outlives the task's end (ms)
  ARGV[4]  now (ms; the hub's clock, as the job's `finishedOn`)
  ARGV[5]  the task's idempotency key (BullMQ's deduplication id, the job's `deid`) when the
           caller read it before the end, else "": read from the job's hash
  ARGV[6]  the key's TTL while the task is not finished (ms); left out by the scripts that end
           the task first (`completeAtOnce`, `cancelTask`), where the task is finished
  ARGV[7]  "1": run late, a failed settle run again (`IdempotencyKeys.settleDeferred`, up to
           minutes after the end). When the job is gone, a key this task still holds is shortened
           to `ttl` from now (never lengthened), and a missing one is not created: the job need
           not have gone at the end. The task may have been retried meanwhile (its key held
           again) and then removed while it waited, which frees the key (an operator's removal,
           as in BullMQ); set again, the key answered a create as a duplicate of the removed
           task. "" or left out: run right after the end, as above

  Returns:
    "none"     the task has no idempotency key (or its hash is gone and the caller did not say it)
    "other"    the key names another task: left as it is
    "held"     not finished: the key expires after ARGV[6]
    "kept"     finished: the key expires `ttl` after the end
    "expired"  finished more than `ttl` ago: the key is deleted
    "free"     run late (ARGV[7]), the job and the key both gone: left missing
]]
local jobKey, taskId, prefix = KEYS[1], ARGV[1], ARGV[2]
local ttl, now = tonumber(ARGV[3]), tonumber(ARGV[4])

local dedupId = ARGV[5]
if dedupId == "" then
  dedupId = redis.call("HGET", jobKey, "deid")
  if not dedupId then
    return "none"
  end
end
local dedupKey = prefix .. "de:" .. dedupId
local holder = redis.call("GET", dedupKey)
if holder and holder ~= taskId then
  return "other"
end

local endedAt = now
if redis.call("EXISTS", jobKey) == 1 then
  if not redis.call("ZSCORE", prefix .. "completed", taskId)
      and not redis.call("ZSCORE", prefix .. "failed", taskId) then
    if ARGV[6] then
      redis.call("SET", dedupKey, taskId, "PX", ARGV[6])
    end
    return "held"
  end
  endedAt = tonumber(redis.call("HGET", jobKey, "finishedOn") or now) or now
elseif ARGV[7] == "1" then
  if not holder then
    return "free"
  end
  local remaining = redis.call("PTTL", dedupKey)
  if remaining < 0 or remaining > ttl then
    redis.call("PEXPIRE", dedupKey, ttl)
  end
  return "kept"
end

local left = endedAt + ttl - now
if left <= 0 then
  if holder then
    redis.call("DEL", dedupKey)
  end
  return "expired"
end
redis.call("SET", dedupKey, taskId, "PX", left)
return "kept"
