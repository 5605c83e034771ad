--[[
  beginReport: the first step of applying a report (complete or fail) of a task, in one round
  trip. Takes the task's report lock (reports of one task are applied one at a time,
  cluster-wide), answers a replay of an applied report as a duplicate, and checks that the agent
  still holds the task under the token. For a completion it records the intent
  (`completing <token> <queue>` in the finished key): should the replica die after BullMQ
  completed the job but before the outcome was recorded, the replay can tell that the completion
  was its own, even when the agent was released meanwhile (a reconnect).

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
    { "superseded", previousMarker }               the agent does not hold the task (lock released)
    { "ok", record, previousMarker, cancelReason } go on; record = HGETALL of the agent;
                                                   cancelReason is read for failures only
                                                   (a completion wins over a cancel request)
]]
if not redis.call("SET", KEYS[2], ARGV[4], "PX", ARGV[5], "NX") then
  return { "busy" }
end
local record = redis.call("HGETALL", KEYS[1])
local f = {}
for i = 1, #record, 2 do
  f[record[i]] = record[i + 1]
end
local completing = "completing " .. ARGV[2] .. " " .. (f.taskQueue or "")
local marker
if ARGV[3] == "completed" then
  -- the usual case (no marker yet) costs one call; the rare ones below put the old value back
  marker = redis.call("SET", KEYS[3], completing, "PX", ARGV[6], "GET") or ""
else
  marker = redis.call("GET", KEYS[3]) or ""
end
local function restoreMarker()
  if ARGV[3] == "completed" and marker ~= completing then
    if marker == "" then
      redis.call("DEL", KEYS[3])
    else
      redis.call("SET", KEYS[3], marker, "PX", ARGV[6])
    end
  end
end
if marker == ARGV[3] .. " " .. ARGV[2] then
  restoreMarker()
  return { "duplicate", record }
end
if f.taskId ~= ARGV[1] or f.token ~= ARGV[2] or (f.state ~= "assigned" and f.state ~= "working") then
  restoreMarker()
  redis.call("DEL", KEYS[2])
  return { "superseded", marker }
end
if ARGV[3] == "completed" then
  return { "ok", record, marker, "" }
end
return { "ok", record, marker, redis.call("GET", KEYS[4]) or "" }
