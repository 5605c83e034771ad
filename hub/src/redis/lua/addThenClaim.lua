--[[
  addThenClaim: a new plain task and, in the same call, a dispatch step for its queue. BullMQ's
  own `addStandardJob` adds the job, then `claimAndFetch` runs the step a trigger would have run
  next: a task created while an agent is idle is handed out without a second round trip.

  This file is the body of a script that scripts.ts composes: `claimAndFetch` and BullMQ's
  `addStandardJob` come first, each as a local function of (KEYS, ARGV).

  KEYS[1..9]     addStandardJob's 9 keys
  KEYS[10..12]   claimAndFetch's keys (its queue: the task's); none: only the add

  ARGV[1]        b: how many ARGV addStandardJob takes
  ARGV[2]        positions (1-based, comma-separated) of those sent as JSON that addStandardJob
                 takes msgpack-packed
  ARGV[3..2+b]   addStandardJob's ARGV
  ARGV[3+b..]    claimAndFetch's ARGV (none with no claim keys)

  Returns:
    { added, claim reply or false }   added = addStandardJob's reply: the job id (an earlier
                                      job's for a duplicate idempotency key), or an error code
                                      below 0, in which case no step ran
]]
local b = tonumber(ARGV[1])
local bullKeys, bullArgs, claimKeys, claimArgs = {}, {}, {}, {}
for i = 1, 9 do
  bullKeys[i] = KEYS[i]
end
for i = 10, #KEYS do
  claimKeys[#claimKeys + 1] = KEYS[i]
end
for i = 3, 2 + b do
  bullArgs[#bullArgs + 1] = ARGV[i]
end
for position in string.gmatch(ARGV[2], "%d+") do
  local i = tonumber(position)
  bullArgs[i] = cmsgpack.pack(cjson.decode(bullArgs[i]))
end
for i = 3 + b, #ARGV do
  claimArgs[#claimArgs + 1] = ARGV[i]
end

local added = addStandardJob(bullKeys, bullArgs)
if (type(added) == "number" and added < 0) or #claimKeys == 0 then
  return { added, false }
end
return { added, claimAndFetch(claimKeys, claimArgs) or false }
