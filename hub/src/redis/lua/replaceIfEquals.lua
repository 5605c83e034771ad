--[[
  replaceIfEquals: replaces a key's value only while it still holds the caller's (a report
  refused after `beginReport` wrote its intent to the task's finished key restores what was
  there, and a replay that finds its report applied replaces the intent with its outcome,
  unless another report has written since).

  KEYS[1]  the key
  ARGV[1]  the value the caller set
  ARGV[2]  the value to put back ("" = delete the key)
  ARGV[3]  TTL of the value put back (ms)

  Returns 1 when the key was changed, 0 when it held something else or nothing.
]]
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == "" then
  redis.call("DEL", KEYS[1])
else
  redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
end
return 1
