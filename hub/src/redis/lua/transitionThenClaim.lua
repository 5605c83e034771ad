--[[
  transitionThenClaim: a transition and, when it applied, a claim, in one call. A report that
  frees an agent also claims an agent for the next runnable job of the task's queue (the freed
  agent, unless another one has been idle longer): under load, the next dispatch step starts
  without a round trip of its own.

  This file is the body of a script that scripts.ts composes: `transition.lua` and
  `claimIdle.lua` come first, each wrapped as a local function of (KEYS, ARGV).

  KEYS[1..n]      the transition's keys (see transition.lua)
  KEYS[n+1..n+3]  the claim's keys (see claimIdle.lua)

  ARGV[1]         n
  ARGV[2]         the transition's spec
  ARGV[3..]       the claim's ARGV

  Returns { transition reply, claim reply or false }
]]
local n = tonumber(ARGV[1])
local transitionKeys, claimKeys, claimArgs = {}, {}, {}
for i = 1, n do
  transitionKeys[i] = KEYS[i]
end
for i = n + 1, #KEYS do
  claimKeys[#claimKeys + 1] = KEYS[i]
end
for i = 3, #ARGV do
  claimArgs[#claimArgs + 1] = ARGV[i]
end
local applied = transition(transitionKeys, { ARGV[2] })
if applied[1] ~= 1 then
  return { applied, false }
end
return { applied, claimIdle(claimKeys, claimArgs) or false }
