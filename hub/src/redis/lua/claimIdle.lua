--[[
  claimIdle: take the longest-idle agent serving one queue and move it idle -> assigned.
  Stale index entries (agents no longer idle) are removed on the way.

  KEYS[1]  idle sorted set of the queue
  KEYS[2]  events stream
  KEYS[3]  ack-deadlines sorted set

  ARGV[1]  agent key prefix   (agent hash = prefix .. agentId)
  ARGV[2]  idle key prefix    (idle set of queue q = prefix .. q)
  ARGV[3]  now (ms)
  ARGV[4]  ack deadline (ms)
  ARGV[5]  hub id (recorded on the event)
  ARGV[6]  approximate cap of the events stream
  ARGV[7]  queue name (recorded on the event)

  Returns:
    { agentId, version, queues }  claimed (queues comma-separated, in the agent's order)
    false                         no idle agent
]]
for _ = 1, 32 do
  local first = redis.call("ZRANGE", KEYS[1], 0, 0)
  local agentId = first[1]
  if not agentId then
    return false
  end
  local agentKey = ARGV[1] .. agentId
  local state = redis.call("HGET", agentKey, "state")
  if state == "idle" then
    local version = redis.call("HINCRBY", agentKey, "version", 1)
    redis.call("HSET", agentKey, "state", "assigned", "assignedAt", ARGV[3])
    local queues = redis.call("HGET", agentKey, "queues") or ""
    for q in string.gmatch(queues, "[^,]+") do
      redis.call("ZREM", ARGV[2] .. q, agentId)
    end
    redis.call("ZREM", KEYS[1], agentId)
    redis.call("ZADD", KEYS[3], ARGV[4], agentId)
    redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[6], "*",
      "agent", agentId, "from", "idle", "to", "assigned",
      "reason", "claim", "task", "", "hub", ARGV[5],
      "version", version, "at", ARGV[3], "queue", ARGV[7])
    return { agentId, version, queues }
  end
  redis.call("ZREM", KEYS[1], agentId)
end
return false
