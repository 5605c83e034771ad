--[[
  beginReport: the first step of applying a report (complete or fail) of a task, in one round
  trip. Takes the task's report lock (reports of one task are applied one at a time,
  cluster-wide), answers a replay of an applied report as a duplicate, and checks that the agent
  still holds the task under the token. For a completion it records the intent
  (`completing <token>` in the finished key): should the replica die after BullMQ completed the
  job but before the outcome was recorded, the replay can tell that the completion was its own.

  KEYS[1]  agent hash
  KEYS[2]  report lock of the task
  KEYS[3]  finished key of the task
  KEYS[4]  cancel-requested key of the task

  ARGV[1]  task id
  ARGV[2]  token
  ARGV[3]  outcome ("completed" or "failed")
  ARGV[4]  lock owner id
  ARGV[5]  lock TTL (ms)
  ARGV[6]  finished-key TTL (ms)

  Returns:
    { "busy" }                                     another report of the task is being applied
    { "duplicate", record }                        this report was applied before
    { "superseded" }                               the agent does not hold the task (lock released)
    { "ok", record, previousMarker, cancelReason } go on; record = HGETALL of the agent
]]
if not redis.call("SET", KEYS[2], ARGV[4], "PX", ARGV[5], "NX") then
  return { "busy" }
end
local marker = redis.call("GET", KEYS[3]) or ""
local record = redis.call("HGETALL", KEYS[1])
if marker == ARGV[3] .. " " .. ARGV[2] then
  return { "duplicate", record }
end
local f = redis.call("HMGET", KEYS[1], "state", "taskId", "token")
if f[2] ~= ARGV[1] or f[3] ~= ARGV[2] or (f[1] ~= "assigned" and f[1] ~= "working") then
  redis.call("DEL", KEYS[2])
  return { "superseded" }
end
if ARGV[3] == "completed" and marker ~= "completing " .. ARGV[2] then
  redis.call("SET", KEYS[3], "completing " .. ARGV[2], "PX", ARGV[6])
end
return { "ok", record, marker, redis.call("GET", KEYS[4]) or "" }
