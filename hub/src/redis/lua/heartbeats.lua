--[[
  heartbeats: the heartbeats one replica received in the last few milliseconds, in one call.
  For each agent: reads the fields a heartbeat checks and, when the record still names the
  connection the heartbeat came on, records its time.

  KEYS[i]    agent hash of heartbeat i
  ARGV[1]    now (ms)
  ARGV[1+i]  socket id heartbeat i came on

  Returns a flat list, 5 values per heartbeat ("" = absent; state "" = no such agent):
    state, socketId, taskId, token, taskQueue
]]
local out = {}
for i, key in ipairs(KEYS) do
  local f = redis.call("HMGET", key, "state", "socketId", "taskId", "token", "taskQueue")
  if f[1] and f[2] == ARGV[1 + i] then
    redis.call("HSET", key, "lastHeartbeatAt", ARGV[1])
  end
  for j = 1, 5 do
    out[#out + 1] = f[j] or ""
  end
end
return out
