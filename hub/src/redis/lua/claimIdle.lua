--[[
  claimIdle: when a job of the queue is runnable, take the longest-idle agent serving the queue,
  move it idle -> assigned and pick the first of its queues (in the agent's order) that has a
  runnable job. Among the LOCAL_SCAN longest-idle agents, one connected to the replica running
  the step (its record's `hubId` is ARGV[5]) goes first: its `task:assign` then stays in this
  process instead of crossing the Socket.IO adapter's pub/sub (a publish, and a message every
  replica reads and decodes). So an agent waits at most behind the LOCAL_SCAN - 1 agents idle
  longer than it. The assignment token is recorded on the agent now, before the job is fetched
  with it, so a replica that dies between fetch and record leaves a token others can find the
  job by (`findJobByLock`). Stale index entries (agents no longer idle) are removed on the way.

  A job is runnable when the queue is not paused and a job waits, is prioritized, or is delayed
  and due (BullMQ promotes due delayed jobs when one is fetched). BullMQ keys are read only.

  KEYS[1]  idle sorted set of the queue
  KEYS[2]  events stream
  KEYS[3]  ack-deadlines sorted set

  ARGV[1]  agent key prefix   (agent hash = prefix .. agentId)
  ARGV[2]  idle key prefix    (idle set of queue q = prefix .. q)
  ARGV[3]  now (ms)
  ARGV[4]  ack deadline (ms)
  ARGV[5]  hub id (recorded on the event; the `hubId` of the agents connected to this replica)
  ARGV[6]  approximate cap of the events stream
  ARGV[7]  queue name
  ARGV[8]  BullMQ key prefix  (queue q's keys = prefix .. q .. ":" .. name)
  ARGV[9]  random part of the assignment token (token = agentId .. ":" .. ARGV[9])

  A caller that composes this script (`claimAndFetch`) passes `true` as a third argument: the
  claim's writes (the record and its indexes) and its event are then left to it, as the last
  item of the reply, `record(extra, reason, task)`, so that a claim that also gets its task is
  one write and one event (`assign`) instead of two each.

  Returns:
    { agentId, version, queues, queue, token, socketId, idleSince }
        claimed; `queue` is where to fetch from, `socketId` the connection the record names (the
        push goes to it), `idleSince` its score in the queue's idle set: a claim that hands out
        nothing puts the agent back with it, in its place in the longest-idle line
    false                                        no runnable job in the queue, or no idle agent
]]
local deferRecord = ...
local now = tonumber(ARGV[3])

-- idle -> assigned on the record, with `extra` fields, and its event; the agent leaves the idle
-- indexes of its queues. Its ack deadline first, then the record, then the indexes: the record's
-- key and the other queues' idle keys are not declared (built from ARGV), and Redis refuses such
-- a key at the command that uses it (an ACL), after what the script wrote before. Refused at the
-- record, the agent is left idle and listed, claimable again (the deadline alone, the sweeper
-- drops); at an index, assigned with its deadline, which the sweeper ends. Taken out of the
-- indexes first, as it was, an agent left `idle` was listed nowhere: never claimed again.
local function record(agentId, version, chosen, token, queues, extra, reason, task)
  redis.call("ZADD", KEYS[3], ARGV[4], agentId)
  local fields = { "state", "assigned", "assignedAt", ARGV[3], "token", token,
    "taskQueue", chosen, "version", version }
  for i = 1, #extra do
    fields[#fields + 1] = extra[i]
  end
  redis.call("HSET", ARGV[1] .. agentId, unpack(fields))
  local listed = false
  for q in string.gmatch(queues, "[^,]+") do
    redis.call("ZREM", ARGV[2] .. q, agentId)
    listed = listed or q == ARGV[7]
  end
  if not listed then
    redis.call("ZREM", KEYS[1], agentId)
  end
  redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[6], "*",
    "agent", agentId, "from", "idle", "to", "assigned",
    "reason", reason, "task", task, "hub", ARGV[5],
    "version", version, "at", ARGV[3], "queue", chosen)
end

local function runnable(queue)
  local base = ARGV[8] .. queue .. ":"
  if redis.call("HEXISTS", base .. "meta", "paused") == 1 then
    return false
  end
  if redis.call("LLEN", base .. "wait") > 0 or redis.call("ZCARD", base .. "prioritized") > 0 then
    return true
  end
  local first = redis.call("ZRANGE", base .. "delayed", 0, 0, "WITHSCORES")
  return first[2] ~= nil and math.floor(tonumber(first[2]) / 4096) <= now
end

local function claim(agentId, f, idleSince)
  local queues = f[2] or ""
  local chosen = ARGV[7]
  for q in string.gmatch(queues, "[^,]+") do
    if q == ARGV[7] or runnable(q) then
      chosen = q
      break
    end
  end
  local token = agentId .. ":" .. ARGV[9]
  local version = tonumber(f[3] or "0") + 1
  local socketId = f[5] or ""
  if deferRecord then
    return { agentId, version, queues, chosen, token, socketId, idleSince,
      function(extra, reason, task)
        record(agentId, version, chosen, token, queues, extra, reason, task)
      end }
  end
  record(agentId, version, chosen, token, queues, {}, "claim", "")
  return { agentId, version, queues, chosen, token, socketId, idleSince }
end

-- The longest-idle agents first: nothing to do without one (one command when all are busy).
local LOCAL_SCAN = 8
local head = redis.call("ZRANGE", KEYS[1], 0, LOCAL_SCAN - 1, "WITHSCORES")
if #head == 0 or not runnable(ARGV[7]) then
  return false
end
local firstId, firstFields, firstSince
for i = 1, #head, 2 do
  local agentId, since = head[i], head[i + 1]
  local f = redis.call("HMGET", ARGV[1] .. agentId, "state", "queues", "version", "hubId", "socketId")
  if f[1] == "idle" then
    if f[4] == ARGV[5] then
      return claim(agentId, f, since)
    end
    if not firstId then
      firstId, firstFields, firstSince = agentId, f, since
    end
  else
    redis.call("ZREM", KEYS[1], agentId)
  end
end
if firstId then
  return claim(firstId, firstFields, firstSince)
end

-- every one of them was a stale entry (no longer idle): go on down the index
for _ = 1, 32 do
  local first = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
  local agentId = first[1]
  if not agentId then
    return false
  end
  local f = redis.call("HMGET", ARGV[1] .. agentId, "state", "queues", "version", "hubId", "socketId")
  if f[1] == "idle" then
    return claim(agentId, f, first[2])
  end
  redis.call("ZREM", KEYS[1], agentId)
end
return false
