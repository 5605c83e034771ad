--[[
  beginReport: the first step of applying a report (complete or fail) of a task, in one round
  trip. Takes the task's report lock (reports of one task are applied one at a time,
  cluster-wide), answers a replay of an applied report as a duplicate, checks that the agent
  still holds the task under the token, and records the report's intent in the finished key:
  `completing <token> <queue>` for a completion, `failing <token> <queue> <attemptsMade>
  <stalledCount>` for a failure (the job's `atm` and `stc` before BullMQ's part). Should the
  replica die after BullMQ's part but before the outcome was recorded, the replay can tell that
  BullMQ applied this report (see `report-intent.ts`), even when the agent was released
  meanwhile (a reconnect). A failure's replay keeps the intent its first try wrote: the counts
  it compares are those from before BullMQ's part.

  KEYS[1]  agent hash
  KEYS[2]  report lock of the task
  KEYS[3]  finished key of the task

  ARGV[1]  task id
  ARGV[2]  token
  ARGV[3]  outcome ("completed" or "failed")
  ARGV[4]  lock owner id
  ARGV[5]  lock TTL (ms)
  ARGV[6]  finished-key TTL (ms)
  ARGV[7]  BullMQ's key root (`<bullPrefix>:`): the job's hash is `<root><queue>:<task id>`
  ARGV[8]  hash of the agent token the reporting connection authenticated with ("" or absent =
           not checked: the hub's own reports)
  ARGV[9]  cancel-request key prefix (key = prefix .. queue .. ":" .. task id; the queue is the
           record's, which holds the task when the report goes on)

  With ARGV[8], the report is refused before anything else (no lock taken, no intent written) when
  the record's token hash is not that one: the agent's token was revoked or replaced since the
  connection authenticated, and the message closing the connection has not reached its replica.
  The record is read first for it (the read the holder check needs anyway): no command more.

  Returns:
    { "revoked" }                                  the connection's token is no longer the agent's
    { "busy" }                                     another report of the task is being applied
    { "duplicate", record }                        this report was applied before
    { "superseded", previousMarker }               the agent does not hold the task (lock released)
    { "ok", record, previousMarker, cancelReason, intent }
                                                   go on; record = HGETALL of the agent;
                                                   cancelReason is read for failures only
                                                   (a completion wins over a cancel request);
                                                   intent = the finished key's value now
]]
local record = redis.call("HGETALL", KEYS[1])
local f = {}
for i = 1, #record, 2 do
  f[record[i]] = record[i + 1]
end
if ARGV[8] and ARGV[8] ~= "" and f.tokenHash ~= ARGV[8] then
  return { "revoked" }
end
if not redis.call("SET", KEYS[2], ARGV[4], "PX", ARGV[5], "NX") then
  return { "busy" }
end
local token, queue = ARGV[2], f.taskQueue or ""
local completing = "completing " .. token .. " " .. queue
local marker
if ARGV[3] == "completed" then
  -- the usual case (no marker yet) costs one call; the rare ones below put the old value back
  marker = redis.call("SET", KEYS[3], completing, "PX", ARGV[6], "GET") or ""
else
  marker = redis.call("GET", KEYS[3]) or ""
end
local function restoreMarker()
  if ARGV[3] == "completed" and marker ~= completing then
    if marker == "" then
      redis.call("DEL", KEYS[3])
    else
      redis.call("SET", KEYS[3], marker, "PX", ARGV[6])
    end
  end
end
if marker == ARGV[3] .. " " .. token then
  restoreMarker()
  return { "duplicate", record }
end
if f.taskId ~= ARGV[1] or f.token ~= token or (f.state ~= "assigned" and f.state ~= "working") then
  restoreMarker()
  redis.call("DEL", KEYS[2])
  return { "superseded", marker }
end
if ARGV[3] == "completed" then
  return { "ok", record, marker, "", completing }
end
local failing = "failing " .. token .. " "
local intent = marker
if string.sub(marker, 1, #failing) ~= failing then
  local counts = redis.call("HMGET", ARGV[7] .. queue .. ":" .. ARGV[1], "atm", "stc")
  intent = failing .. queue .. " " .. (counts[1] or "0") .. " " .. (counts[2] or "0")
  redis.call("SET", KEYS[3], intent, "PX", ARGV[6])
end
return { "ok", record, marker, redis.call("GET", ARGV[9] .. queue .. ":" .. ARGV[1]) or "", intent }
