--[[ ingest/holds.lua: units held for work whose size is known only afterwards
(docs/holds.md). A hold takes room like consumption until it is settled,
released or reaches its expiry; it is never flushed (only what is settled is
usage).

Where a customer's holds live:
* the used hash, field "h:<ent>:<period>": the units its live holds keep on that
  period (the field is deleted at zero);
* "<used key>:holds": sorted set, hold key -> expiry (epoch us) of its live holds;
* the hold record, a hash at the hold's key: s status (held, settled, released,
  expired), a allocation "<field>=<units>,...", e expiry, u the used key, k the
  signature of the reservation ("<quantity>:<target>"), q held units, m what
  the caller needs to settle it (JSON, opaque here), sq settled units, at when
  it ended; kept until an hour after it ends (HOLD_KEEP_US);
* holds_due_key: sorted set, used key -> the earliest expiry of its live holds (a
  job frees holds of customers nobody reads; no read or count waits for it).

By time alone: every script that reads a customer's held units first frees the
holds whose expiry is at or before now (purge_holds), in the same atomic call, so
a hold past its expiry never takes room, whether or not anything ran at that
instant.

Needs (bound by the including script): now_us, holds_due_key.
Defines: HOLD_KEEP_US, keep_until, purge_holds, held_value, held_add,
held_give_back, held_undo, write_held, hold_fields, holds_key, rearm_due, add_held.
]]

--- @include "ingest/util"

-- A hold's record is kept this long after it ends (settled, released or expired), so
-- a retried settle, release or reserve is answered from it; then forgotten.
local HOLD_KEEP_US = 3600000000

local function keep_until(hold_key, ended_us)
  redis.call("PEXPIREAT", hold_key, int_str(math.floor((ended_us + HOLD_KEEP_US) / 1000)))
end

local purged = {}
-- used key -> field -> { held units read from Redis, delta of this call }
local held = {}

local function holds_key(used_key)
  return used_key .. ":holds"
end

-- Each "<field>=<units>" of an allocation text.
local function hold_fields(allocation)
  local parts = {}
  for field, units in string.gmatch(allocation or "", "([^,=]+)=(%d+)") do
    parts[#parts + 1] = { field, tonumber(units) }
  end
  return parts
end

local function add_held(used_key, field, delta)
  local after = tonumber(redis.call("HINCRBY", used_key, "h:" .. field, int_str(delta)))
  if after <= 0 then redis.call("HDEL", used_key, "h:" .. field) end
end

-- Keep holds_due_key's entry of used_key at the earliest live expiry (none: removed).
local function rearm_due(used_key)
  local first = redis.call("ZRANGE", holds_key(used_key), 0, 0, "WITHSCORES")
  if first[1] == nil then
    redis.call("ZREM", holds_due_key, used_key)
  else
    redis.call("ZADD", holds_due_key, first[2], used_key)
  end
end

-- Free every hold of used_key whose expiry is at or before now (once a call; before
-- any held figure of used_key is read).
local function purge_holds(used_key)
  if purged[used_key] then return end
  purged[used_key] = true
  local zkey = holds_key(used_key)
  local due = redis.call("ZRANGEBYSCORE", zkey, "-inf", int_str(now_us))
  if #due == 0 then return end
  for _, hold_key in ipairs(due) do
    local rec = redis.call("HMGET", hold_key, "s", "a")
    if rec[1] == "held" then
      for _, part in ipairs(hold_fields(rec[2])) do add_held(used_key, part[1], -part[2]) end
      redis.call("HSET", hold_key, "s", "expired")
    end
  end
  redis.call("ZREMRANGEBYSCORE", zkey, "-inf", int_str(now_us))
  rearm_due(used_key)
end

local function held_entry(used_key, field)
  local fields = table_at(held, used_key)
  local entry = fields[field]
  if entry == nil then
    purge_holds(used_key)
    entry = { tonumber(redis.call("HGET", used_key, "h:" .. field) or "0"), 0 }
    fields[field] = entry
  end
  return entry
end

-- The units live holds keep on field now (this call's changes included).
local function held_value(used_key, field)
  local entry = held_entry(used_key, field)
  return entry[1] + entry[2]
end

local function held_add(used_key, field, delta)
  local entry = held_entry(used_key, field)
  entry[2] = entry[2] + delta
end

-- A hold's units given back in this call's figures (settle: before its usage is
-- burned down, so the hold's own room takes it); held_undo puts them back when the
-- usage is not counted after all.
local function held_give_back(used_key, allocation)
  for _, part in ipairs(hold_fields(allocation)) do held_add(used_key, part[1], -part[2]) end
end

local function held_undo(used_key, allocation)
  for _, part in ipairs(hold_fields(allocation)) do held_add(used_key, part[1], part[2]) end
end

-- Write this call's held deltas (once per touched field, at the end of the call).
local function write_held()
  for used_key, fields in pairs(held) do
    for field, entry in pairs(fields) do
      if entry[2] ~= 0 then add_held(used_key, field, entry[2]) end
    end
  end
end
