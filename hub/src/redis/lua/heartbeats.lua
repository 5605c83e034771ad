--[[
  heartbeats: the heartbeats one replica received in the last few milliseconds, in one call.
  For each agent: reads the fields a heartbeat checks and, when the record still names the
  connection the heartbeat came on, records its time. For such a record `working` on a task, also
  whether an operator asked to cancel that task (one EXISTS, for working agents only: idle ones
  cost nothing more), so the heartbeat can carry the cancel to an agent that missed it; and when
  the record was assigned its task, so a push the agent never got can be sent again. A record
  whose token hash is not the one the connection authenticated with (the token was revoked or
  replaced, and the message closing the connection was lost) is flagged, and its time is not
  recorded.

  KEYS[i]                agent hash of heartbeat i
  ARGV[1]                now (ms)
  ARGV[1+i]              socket id heartbeat i came on
  ARGV[#KEYS + 2]        cancel-request key prefix (key = prefix .. taskQueue .. ":" .. taskId;
                         same hash tag)
  ARGV[#KEYS + 2 + i]    hash of the token heartbeat i's connection authenticated with

  Returns a flat list, 8 values per heartbeat ("" = absent; state "" = no such agent):
    state, socketId, taskId, token, taskQueue, assignedAt, cancelRequested ("1" or ""),
    tokenRevoked ("1" when the record's token hash is not the connection's, or is gone)
]]
local cancelPrefix = ARGV[#KEYS + 2]
local out = {}
for i, key in ipairs(KEYS) do
  local f = redis.call("HMGET", key, "state", "socketId", "taskId", "token", "taskQueue", "assignedAt",
    "tokenHash")
  local cancel = ""
  local revoked = ""
  if f[1] and f[7] ~= ARGV[#KEYS + 2 + i] then
    revoked = "1"
  elseif f[1] and f[2] == ARGV[1 + i] then
    redis.call("HSET", key, "lastHeartbeatAt", ARGV[1])
    if f[1] == "working" and f[3] and f[5] and cancelPrefix
      and redis.call("EXISTS", cancelPrefix .. f[5] .. ":" .. f[3]) == 1 then
      cancel = "1"
    end
  end
  for j = 1, 6 do
    out[#out + 1] = f[j] or ""
  end
  out[#out + 1] = cancel
  out[#out + 1] = revoked
end
return out
