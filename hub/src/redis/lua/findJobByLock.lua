--[[
  findJobByLock: the id of the active job of a queue whose BullMQ lock is `token`. Used when an
  agent was claimed with a token but its replica stopped before recording which job it fetched
  with it. O(active jobs of the queue); runs only on that recovery path. BullMQ keys, read only.

  ARGV[1]  the queue's BullMQ key prefix (BullMQ prefix .. queue .. ":")
  ARGV[2]  token

  Returns: the job id, or false
]]
for _, id in ipairs(redis.call("LRANGE", ARGV[1] .. "active", 0, -1)) do
  if redis.call("GET", ARGV[1] .. id .. ":lock") == ARGV[2] then
    return id
  end
end
return false
