--[[
  accept: the agent starts the task it was assigned (assigned -> working), in one step: checks
  that it still holds the task under this token, leaves the ack-deadline index, enters the
  run-deadline index when the task has a run timeout, ends the agent's streak of ack timeouts
  (`missedAcks`, which doubles its next ack-timeout cooldown: see the sweeper), logs the event.
  (The transition table allows assigned -> working; this script is that one transition.)

  KEYS[1]  agent hash
  KEYS[2]  events stream
  KEYS[3]  ack-deadlines sorted set
  KEYS[4]  run-deadlines sorted set

  ARGV[1]  agent id
  ARGV[2]  task id
  ARGV[3]  token
  ARGV[4]  now (ms)
  ARGV[5]  hub id
  ARGV[6]  approximate cap of the events stream
  ARGV[7]  hash of the agent token the accepting connection authenticated with ("" = not checked)
  ARGV[8]  BullMQ key prefix (queue q's keys = prefix .. q .. ":" .. name); optional, with ARGV[9]
  ARGV[9]  lease (ms)

  With ARGV[7], the accept is refused, before anything else, when the record's token hash is not
  that one: the agent's token was revoked or replaced since the connection authenticated, and the
  message closing the connection has not reached its replica (Redis pub/sub delivers at most once).
  In the same HMGET, so the check costs no command.

  With ARGV[8] and ARGV[9], an accept is fenced by the job's BullMQ lock as well, and renews it:
  - the lock must still be the token. The record alone does not tell: no sweep may have ended
    the assignment yet (a sweep runs every SWEEP_MS, a replica may pause), while the lock taken
    at the push ran out, BullMQ's stalled checker put the job back and another agent was handed
    it. Accepted, the late agent would run the task a second time.
  - the lock then lasts a whole lease from now: it was taken at the push, and the lease keeper
    extends it only from its next tick, up to a heartbeat later, which may be after it ran out.

  Returns:
    { 1, version, taskQueue }   accepted now
    { 2, version, taskQueue }   already working on it (a replayed accept)
    { 0, state }                the agent does not hold this task under this token (or, fenced,
                                the job's lock is no longer the token: `state` is "lock")
    { -1 }                      the connection's token is no longer the agent's (ARGV[7]);
                                nothing changed
]]
local f = redis.call("HMGET", KEYS[1],
  "state", "taskId", "token", "taskQueue", "taskTimeoutMs", "version", "missedAcks", "tokenHash")
if ARGV[7] and ARGV[7] ~= "" and f[8] ~= ARGV[7] then
  return { -1 }
end
local state, taskId, token, taskQueue, timeoutMs = f[1], f[2], f[3], f[4] or "", f[5]
if taskId ~= ARGV[2] or token ~= ARGV[3] or (state ~= "assigned" and state ~= "working") then
  return { 0, state or "" }
end
if state == "working" then
  return { 2, tonumber(f[6] or "0"), taskQueue }
end
if ARGV[8] and ARGV[8] ~= "" then
  local base = ARGV[8] .. taskQueue .. ":"
  local lockKey = base .. ARGV[2] .. ":lock"
  if redis.call("GET", lockKey) ~= ARGV[3] then
    return { 0, "lock" }
  end
  -- not also taken out of the stalled set, as BullMQ's extendLock does (a command more per
  -- task): the stalled checker passes over a job whose lock exists
  redis.call("SET", lockKey, ARGV[3], "PX", tonumber(ARGV[9]))
end
local version = tonumber(f[6] or "0") + 1
local patch = { "state", "working", "startedAt", ARGV[4], "version", version }
-- the agent answered: no further command for it (the accept path is counted), a field of the
-- same HSET, and only when a streak was counted (most records never have one)
if f[7] and f[7] ~= "0" then
  patch[#patch + 1] = "missedAcks"
  patch[#patch + 1] = "0"
end
redis.call("HSET", KEYS[1], unpack(patch))
redis.call("ZREM", KEYS[3], ARGV[1])
if timeoutMs and timeoutMs ~= "" then
  redis.call("ZADD", KEYS[4], tonumber(ARGV[4]) + tonumber(timeoutMs), ARGV[1])
end
redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[6], "*",
  "agent", ARGV[1], "from", "assigned", "to", "working",
  "reason", "accept", "task", ARGV[2], "hub", ARGV[5],
  "version", version, "at", ARGV[4])
return { 1, version, taskQueue }
