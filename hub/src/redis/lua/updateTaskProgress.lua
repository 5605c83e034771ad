--[[
  updateTaskProgress: records a task's progress with BullMQ's own `updateProgress` (the job's
  `progress` field, a `progress` event in the queue's events stream, as `job.updateProgress`
  writes them) when the agent still holds the task under the token (`heldTask`), in one step.
  Reading the record, then the job, then writing was three round trips, and a rotation or revoke
  of the agent's token, or the task given to another, between the check and the write let an
  update of a connection that no longer holds the task through; a lock that ran out let it into
  the next attempt.

  This file is the body of a script that scripts.ts composes: `heldTask` and BullMQ's
  `updateProgress` come first, as local functions of (KEYS, ARGV).

  KEYS[1]     agent hash
  KEYS[2..4]  updateProgress's 3 keys: the job's hash, the queue's events stream, its meta hash
  KEYS[5]     the job's lock (BullMQ's `<job>:lock`)
  ARGV[1]     task id
  ARGV[2]     token
  ARGV[3]     hash of the agent token the reporting connection authenticated with ("" = not
              checked)
  ARGV[4]     the progress, JSON (as `job.updateProgress` serialises it)

  Returns 0 when written; -1 (nothing written) when the agent does not hold the task under the
  token, the job's lock is not the token, or the job is gone (BullMQ's own reply for a missing
  job); -2 (nothing written) when the record's token hash is not ARGV[3] (checked first).
]]
local held = heldTask({ KEYS[1], KEYS[5] }, { ARGV[1], ARGV[2], ARGV[3] })
if held ~= 0 then
  return held
end
return updateProgress({ KEYS[2], KEYS[3], KEYS[4] }, { ARGV[1], ARGV[4] })
