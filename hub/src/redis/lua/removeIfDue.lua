--[[
  removeIfDue: drops an agent's entry from a due-time index (ack deadlines, disconnects,
  cooldowns, run deadlines) only while it is still due by the bound the caller listed it with.
  The sweeper lists due entries, reads each record, and drops the entry of a record that no
  longer matches it; a plain ZREM would also drop an entry made in between for a new deadline
  (the agent re-entered the index), leaving the agent in cooldown, or assigned, for good.

  KEYS[1]  the index (a sorted set scored by due time)
  ARGV[1]  the agent id
  ARGV[2]  the bound the entry was listed as due by (its score at most this)

  Returns 1 when the entry was dropped, 0 when it is absent or now due later.
]]
local score = redis.call("ZSCORE", KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call("ZREM", KEYS[1], ARGV[1])
end
return 0
