--[[
  completeAtOnce: a completion in one call, when nothing about it is unusual. Checks that no other
  report of the task is being applied or was applied, and that the agent holds the task under the
  token; then BullMQ's own `moveToFinished` completes the job (its lock checked against the
  token); then the agent's release (a transition spec built by the caller: working -> idle, the
  finished marker written whatever the outcome); then, when the agent is idle, the next dispatch
  step (`claimAndFetch`). Being one script, it needs neither the report lock nor the completion
  intent of the step-by-step path, which takes over whenever anything is unusual:
  - `revoked`: the record's token hash is not the one the reporting connection authenticated
    with (ARGV[3]; "" = not checked): the agent's token was revoked or replaced, and the message
    closing the connection has not reached its replica. Checked first, in the record's one read.
    Nothing was changed.
  - `slow`: another report holds the lock or was applied, the agent does not hold the task, or
    BullMQ refused the completion (the lock is gone or another's). Nothing was changed.
  - `completed` with a transition reply other than applied: the job is completed and the marker
    written, but the record is not the plain `working` one the spec expects (draining, a
    cooldown, disconnected): the caller releases the agent from a fresh read.
  A completed task's idempotency key (which BullMQ's completion deletes) is set to outlive it as
  long as its finished marker (`settleIdempotencyKey.lua`). A settle Redis refuses (an ACL that
  denies the key's write) is caught and returned for the caller to run again later: raised, it
  failed the whole script after the job's completion and the agent's release, the report was
  answered as an error, its replay as a duplicate, and the key kept its ten years.

  This file is the body of a script that scripts.ts composes: `transition.lua`,
  `claimAndFetch`, BullMQ's `moveToFinished` and `settleIdempotencyKey` come first, each as a
  local function of (KEYS, ARGV).

  KEYS[1]               agent hash
  KEYS[2]               the task's report lock
  KEYS[3]               the task's finished marker
  KEYS[4..17]           moveToFinished's 14 keys
  KEYS[18..17+n]        the transition's keys
  KEYS[18+n..20+n]      claimAndFetch's keys

  ARGV[1]               task id
  ARGV[2]               token
  ARGV[3]               hash of the agent token the reporting connection authenticated with
                        ("" = not checked)
  ARGV[4]               n
  ARGV[5]               b: how many ARGV moveToFinished takes
  ARGV[6..5+b]          moveToFinished's ARGV
  ARGV[6+b]             the transition's spec
  ARGV[7+b..]           claimAndFetch's ARGV (its queue: the task's)

  Returns:
    { "revoked" }                                                        nothing changed
    { "slow" }                                                           nothing changed
    { "completed", startedAt, queues, transition reply, claim reply or false,
      false, or { idempotency key, error } when its settle was refused }
]]
local held = redis.call("HMGET", KEYS[1], "state", "taskId", "token", "startedAt", "queues",
  "tokenHash")
if ARGV[3] ~= "" and held[6] ~= ARGV[3] then
  return { "revoked" }
end
if redis.call("EXISTS", KEYS[2], KEYS[3]) > 0 then
  return { "slow" }
end
if (held[1] ~= "working" and held[1] ~= "assigned") or held[2] ~= ARGV[1]
    or held[3] ~= ARGV[2] then
  return { "slow" }
end

local n, b = tonumber(ARGV[4]), tonumber(ARGV[5])
local bullKeys, transitionKeys = { unpack(KEYS, 4, 17) }, { unpack(KEYS, 18, 17 + n) }
local claimKeys = { unpack(KEYS, 18 + n, #KEYS) }
local bullArgs, claimArgs = { unpack(ARGV, 6, 5 + b) }, { unpack(ARGV, 7 + b, #ARGV) }

-- read before the completion: a job that no retention keeps has no hash after it
local jobKey = bullKeys[12]
local dedupId = redis.call("HGET", jobKey, "deid")
local finished = moveToFinished(bullKeys, bullArgs)
if type(finished) == "number" and finished < 0 then
  return { "slow" }
end

local startedAt, queues = held[4] or "", held[5] or ""
local applied = transition(transitionKeys, { ARGV[6 + b] })
-- the transition wrote the finished marker, whatever its outcome: the key lives as long as it
-- (moveToFinished's ARGV[2] is the completion's time, ARGV[7] the queue's key prefix)
local unsettled = false
if dedupId then
  local markerTtl = redis.call("PTTL", KEYS[3])
  if markerTtl > 0 then
    local settled, err = pcall(settleIdempotencyKey, { jobKey },
      { ARGV[1], bullArgs[7], markerTtl, bullArgs[2], dedupId })
    if not settled then
      -- a string in Redis 7.0, a table { err = ... } in later versions
      unsettled = { dedupId, type(err) == "table" and tostring(err.err) or tostring(err) }
    end
  end
end
if applied[1] ~= 1 then
  return { "completed", startedAt, queues, applied, false, unsettled }
end
return { "completed", startedAt, queues, applied, claimAndFetch(claimKeys, claimArgs) or false,
  unsettled }
