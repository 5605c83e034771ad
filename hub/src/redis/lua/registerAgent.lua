--[[
  registerAgent: creates an agent or rotates its token, in one step. Done in two (a HSETNX of the
  state, then a MULTI), a reader between them saw a record with a state but no version or token
  hash, and a revoke between them answered `revoked` for an agent whose new token then worked.
  A rotation keeps the record's state, version, counters and task: only the token hash changes
  (and the allowed queues, when given). Concurrent rotations are applied one after the other: the
  last one applied holds the agent's only working token.

  KEYS[1]  agent hash
  KEYS[2]  set of every agent id
  KEYS[3]  sorted set of every agent id, each scored 0 (ranged by id)

  ARGV[1]  agent id
  ARGV[2]  token hash
  ARGV[3]  allowed queues, comma-separated; absent: left as they are (none for a new agent)

  Returns "created" (a new record, offline, version 0) or "rotated" (an existing record's token
  hash replaced).
]]
local created = redis.call("HSETNX", KEYS[1], "state", "offline") == 1
-- kept when present: a record written by an older hub in two steps may lack it
redis.call("HSETNX", KEYS[1], "version", "0")
if ARGV[3] then
  redis.call("HSET", KEYS[1], "tokenHash", ARGV[2], "allowedQueues", ARGV[3])
else
  redis.call("HSET", KEYS[1], "tokenHash", ARGV[2])
end
redis.call("SADD", KEYS[2], ARGV[1])
redis.call("ZADD", KEYS[3], 0, ARGV[1])
if created then
  return "created"
end
return "rotated"
