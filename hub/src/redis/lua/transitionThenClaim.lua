--[[
  transitionThenClaim: a transition and, when it applied, a whole dispatch step
  (`claimAndFetch`), in one call. A report that frees an agent also claims an agent for the next
  runnable job of the task's queue (the freed agent, unless another one has been idle longer),
  fetches the job and records it: under load, the next task is handed out without a round trip
  of its own.

  This file is the body of a script that scripts.ts composes: `transition.lua` and
  `claimAndFetch` (itself composed) come first, each wrapped as a local function of (KEYS, ARGV).

  KEYS[1..n]      the transition's keys (see transition.lua)
  KEYS[n+1..n+3]  the claim's keys (see claimAndFetch.lua)

  ARGV[1]         n
  ARGV[2]         the transition's spec
  ARGV[3..]       claimAndFetch's ARGV

  Returns { transition reply, claimAndFetch reply or false }
]]
local n = tonumber(ARGV[1])
local transitionKeys, claimKeys = { unpack(KEYS, 1, n) }, { unpack(KEYS, n + 1, #KEYS) }
local claimArgs = { unpack(ARGV, 3, #ARGV) }
local applied = transition(transitionKeys, { ARGV[2] })
if applied[1] ~= 1 then
  return { applied, false }
end
return { applied, claimAndFetch(claimKeys, claimArgs) or false }
