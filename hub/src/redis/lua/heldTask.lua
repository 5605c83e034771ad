--[[
  heldTask: whether an agent holds a task under a token, for an event of the task that writes
  (`appendTaskLog`, `updateTaskProgress` run it first, in the same step as their write). Checks
  the connection's token hash against the record's first, then that the record holds the task
  under the token (`assigned` or `working`), then that the job's lock (BullMQ's; its value is
  the assignment token) is still the token: once it ran out and the stalled check gave the task
  to another agent, the first agent's record names the task until its replica notices.

  KEYS[1]  agent hash
  KEYS[2]  the job's lock (BullMQ's `<job>:lock`)
  ARGV[1]  task id
  ARGV[2]  token
  ARGV[3]  hash of the agent token the connection authenticated with ("" = not checked)

  Returns 0 when held; -1 when not held under the token (or the lock is another's, or gone); -2
  when the record's token hash is not ARGV[3].
]]
local f = redis.call("HMGET", KEYS[1], "tokenHash", "state", "taskId", "token")
if ARGV[3] ~= "" and f[1] ~= ARGV[3] then
  return -2
end
if (f[2] ~= "assigned" and f[2] ~= "working") or f[3] ~= ARGV[1] or f[4] ~= ARGV[2] then
  return -1
end
if redis.call("GET", KEYS[2]) ~= ARGV[2] then
  return -1
end
return 0
