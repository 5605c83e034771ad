--[[
  transition: compare-and-set one agent's record, keep its index sets in step, log the event.
  The TypeScript transition table decides what is legal; this script only checks the
  expectations and applies the patch, atomically.

  KEYS[1]     agent hash
  KEYS[2]     events stream
  KEYS[3..n]  sorted sets the spec refers to by index (idle indexes, deadlines, ...)

  ARGV[1]  spec, JSON:
    agentId   string
    expect    { field = value }   each field must equal value ("" = absent)
    set       { field = value }
    del       [ field ]
    incr      { field = n }
    zadd      [ [keyIndex, score] ]  ZADD KEYS[keyIndex] score agentId
    zrem      [ keyIndex ]           ZREM KEYS[keyIndex] agentId (applied before zadd)
    event     { reason, task?, hub }  appended with from/to/version/at
    now       ms
    maxEvents approximate cap of the stream
    absent    [ keyIndex ]           each KEYS[keyIndex] must not exist (else a conflict on
                                     field "@absent" with the key's value as `actual`)
    kset      [ [keyIndex, value, ttlMs] ]  SET KEYS[keyIndex] value PX ttlMs   } applied first,
    kdelIf    [ [keyIndex, value] ]  DEL KEYS[keyIndex] if it holds value       } whatever the
                                                                                  outcome
    idleAddOwn  idle key prefix: ZADD (score now) the idle set of each queue of the record's
              own `queues` field (for a caller that does not know them: `completeAtOnce`),
              before any other write of the patch (see there); not with a zrem of those sets

  Returns:
    { 1, version }                              applied
    { 0, field, actual, state, version }        an expectation failed; nothing changed
    { -1 }                                      no such agent (no record with a state)

  Redis calls: one HMGET reads every field the checks and counters need (and `queues` for
  idleAddOwn); the version and the counters are written with the patch (one HSET), not
  incremented separately.
]]
local spec = cjson.decode(ARGV[1])
local agentKey = KEYS[1]

for _, op in ipairs(spec.kset or {}) do
  redis.call("SET", KEYS[op[1]], op[2], "PX", op[3])
end
for _, op in ipairs(spec.kdelIf or {}) do
  if redis.call("GET", KEYS[op[1]]) == op[2] then
    redis.call("DEL", KEYS[op[1]])
  end
end

-- one read: state, version and every expected field
local fields = { "state", "version" }
for field in pairs(spec.expect or {}) do
  fields[#fields + 1] = field
end
local expected = #fields
for field in pairs(spec.incr or {}) do
  fields[#fields + 1] = field
end
local counted = #fields
if spec.idleAddOwn then
  fields[#fields + 1] = "queues"
end
local values = redis.call("HMGET", agentKey, unpack(fields))
if not values[1] then
  return { -1 }
end
local state = values[1]
local version = tonumber(values[2] or "0")

for i = 3, expected do
  local actual = values[i] or ""
  if actual ~= tostring(spec.expect[fields[i]]) then
    return { 0, fields[i], actual, state, version }
  end
end

for _, index in ipairs(spec.absent or {}) do
  local value = redis.call("GET", KEYS[index])
  if value then
    return { 0, "@absent", value, state, version }
  end
end

-- First of the patch's writes: these keys are not declared (built from the record), and Redis
-- refuses such a key at the command that uses it (an ACL), after what the script wrote before.
-- Here nothing of the patch is written yet: the record still holds what it held (the caller's
-- replay or sweep then finishes it), not `idle` while no idle index lists it (never claimed
-- again, and nothing but a reconnect added it back).
if spec.idleAddOwn then
  -- the field as the patch leaves it
  local queues = (spec.set and spec.set.queues) or values[counted + 1] or ""
  for _, field in ipairs(spec.del or {}) do
    if field == "queues" then
      queues = ""
    end
  end
  for q in string.gmatch(queues, "[^,]+") do
    redis.call("ZADD", spec.idleAddOwn .. q, spec.now, spec.agentId)
  end
end

local newVersion = version + 1
local flat = { "version", newVersion }
for field, value in pairs(spec.set or {}) do
  flat[#flat + 1] = field
  flat[#flat + 1] = tostring(value)
end
for i = expected + 1, counted do
  flat[#flat + 1] = fields[i]
  flat[#flat + 1] = tonumber(values[i] or "0") + spec.incr[fields[i]]
end
redis.call("HSET", agentKey, unpack(flat))
if spec.del and #spec.del > 0 then
  redis.call("HDEL", agentKey, unpack(spec.del))
end

-- removals first, so a set both left and re-entered ends up holding the agent
for _, index in ipairs(spec.zrem or {}) do
  redis.call("ZREM", KEYS[index], spec.agentId)
end
for _, entry in ipairs(spec.zadd or {}) do
  redis.call("ZADD", KEYS[entry[1]], entry[2], spec.agentId)
end

local newState = (spec.set and spec.set.state) or state
local ev = spec.event or {}
redis.call("XADD", KEYS[2], "MAXLEN", "~", spec.maxEvents, "*",
  "agent", spec.agentId, "from", state, "to", newState,
  "reason", ev.reason or "", "task", ev.task or "", "hub", ev.hub or "",
  "version", newVersion, "at", spec.now)

return { 1, newVersion }
