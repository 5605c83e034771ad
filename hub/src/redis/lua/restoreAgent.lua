--[[
  restoreAgent: records again an agent whose record Redis lost (restarted empty, failed over to an
  empty replica, flushed) while the agent kept its authenticated connection to a replica. Only a
  missing record is written: agentcom never deletes one (a revoke keeps it without its token
  hash), so an existing record, revoked or not, is left alone.

  KEYS[1]  agent hash
  KEYS[2]  set of every agent id
  KEYS[3]  sorted set of every agent id, each scored 0 (ranged by id: the pages of the listing)
  ARGV[1]  agent id
  ARGV[2]  token hash (of the token the connection authenticated with)
  ARGV[3]  allowed queues, comma-separated (the queues the connection serves)

  Returns 1 when the record was written (state offline, version 0), 0 when it exists.
]]
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
redis.call("HSET", KEYS[1], "state", "offline", "version", "0", "tokenHash", ARGV[2], "allowedQueues", ARGV[3])
redis.call("SADD", KEYS[2], ARGV[1])
redis.call("ZADD", KEYS[3], 0, ARGV[1])
return 1
