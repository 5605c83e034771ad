--[[
  appendTaskLog: appends a log batch's lines to a task's job log, keeping the last ones, in one
  step, when the agent still holds the task under the token. BullMQ's `addLog` takes one line a
  call: a batch of 100 lines was 100 round trips, one after the other, ~9 ms of a replica's CPU,
  for a log batch the flood guard charges ~0.2. Same effect as BullMQ's `addLog` once per line
  (RPUSH, then LTRIM to the last ARGV[1]).

  That the agent holds the task is checked in the same step as the write (`heldTask`, composed
  first as a local function: scripts.ts): a rotation or revoke of the agent's token, or the task
  given to another, between a check and the write would let a batch of a connection that no
  longer holds the task through, and a lock that ran out let its lines into the next attempt.

  KEYS[1]  agent hash
  KEYS[2]  the job's hash (BullMQ's)
  KEYS[3]  the job's log list (BullMQ's `<job>:logs`)
  KEYS[4]  the job's lock (BullMQ's `<job>:lock`)
  ARGV[1]  how many lines the log keeps
  ARGV[2]  task id
  ARGV[3]  token
  ARGV[4]  hash of the agent token the logging connection authenticated with ("" = not checked)
  ARGV[5..] the lines

  Returns the log's length after; -1 (nothing written) when the agent does not hold the task
  under the token, the job's lock is not the token, or the job is gone; -2 (nothing written) when
  the record's token hash is not ARGV[4] (checked first).
]]
local held = heldTask({ KEYS[1], KEYS[4] }, { ARGV[2], ARGV[3], ARGV[4] })
if held ~= 0 then
  return held
end
if redis.call("EXISTS", KEYS[2]) == 0 then
  return -1
end
local length = redis.call("RPUSH", KEYS[3], unpack(ARGV, 5))
local keep = tonumber(ARGV[1])
redis.call("LTRIM", KEYS[3], -keep, -1)
return math.min(keep, length)
