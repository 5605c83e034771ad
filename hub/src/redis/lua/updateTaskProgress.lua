--[[
  updateTaskProgress: records a task's progress with BullMQ's own `updateProgress` (the job's
  `progress` field, a `progress` event in the queue's events stream, as `job.updateProgress`
  writes them) when the agent still holds the task under the token, in one step. Reading the
  record, then the job, then writing was three round trips, and a rotation or revoke of the
  agent's token, or the task given to another, between the check and the write let an update of
  a connection that no longer holds the task through. The job's lock (BullMQ's; its value is the
  assignment token) is checked too: once it ran out and the task went to another agent, the first
  agent's record still names the task until its replica notices, and its progress went into the
  new attempt.

  This file is the body of a script that scripts.ts composes: BullMQ's `updateProgress` comes
  first, as a local function of (KEYS, ARGV).

  KEYS[1]     agent hash
  KEYS[2..4]  updateProgress's 3 keys: the job's hash, the queue's events stream, its meta hash
  KEYS[5]     the job's lock (BullMQ's `<job>:lock`)
  ARGV[1]     task id
  ARGV[2]     token
  ARGV[3]     hash of the agent token the reporting connection authenticated with ("" = not
              checked)
  ARGV[4]     the progress, JSON (as `job.updateProgress` serialises it)

  Returns 0 when written; -1 (nothing written) when the agent does not hold the task under the
  token, the job's lock is not the token, or the job is gone (BullMQ's own reply for a missing job); -2 (nothing written) when the
  record's token hash is not ARGV[3] (checked first).
]]
local f = redis.call("HMGET", KEYS[1], "tokenHash", "state", "taskId", "token")
if ARGV[3] ~= "" and f[1] ~= ARGV[3] then
  return -2
end
if (f[2] ~= "assigned" and f[2] ~= "working") or f[3] ~= ARGV[1] or f[4] ~= ARGV[2] then
  return -1
end
if redis.call("GET", KEYS[5]) ~= ARGV[2] then
  return -1
end
return updateProgress({ KEYS[2], KEYS[3], KEYS[4] }, { ARGV[1], ARGV[4] })
