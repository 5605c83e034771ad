--[[
  delIfEquals: drops a lock only while it is still the caller's (a GET then a DEL from the
  client could drop a lock that expired and was taken by someone else in between).

  KEYS[1]  the lock
  ARGV[1]  the value the caller set

  Returns 1 when the key was deleted, 0 when it held something else or nothing.
]]
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
