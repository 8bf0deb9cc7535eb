--[[ ingest/used.lua: the used-totals cache of one batch. Counters are read (HGET)
once a batch where needed and their deltas summed here; the main script writes
them once per touched field at the end.

Needs (bound by the including script): big_key, now_us, holds_due_key.
Defines: MAX_UNITS, BIG, is_big, used, pending, allocation, used_entry, used_value,
room_of, add_to, latest, latest_of.
]]

--- @include "ingest/util"
--- @include "ingest/holds"

-- The most units a counter holds exactly (Lua numbers are doubles), at any scale.
local MAX_UNITS = 9007199254740991
-- A running total above BIG is listed in big_key (by the HINCRBY that passes it, or
-- by the loader that seeds it): one not listed is at most BIG, so a count that adds
-- at most MAX_UNITS - BIG to it needs no read to stay exact.
local BIG = 4503599627370496 -- 2^52
local big = nil

local function is_big(field)
  if big == nil then
    big = {}
    for _, f in ipairs(redis.call("SMEMBERS", big_key)) do big[f] = true end
  end
  return big[field] == true
end
-- used_key -> field -> { base value read from Redis (or false), delta of this batch }
local used = {}
local pending = {}
-- "<field>=<micros>" of the event being counted (its record's last part)
local allocation = {}

local function used_entry(used_key, field)
  local fields = table_at(used, used_key)
  local entry = fields[field]
  if entry == nil then
    entry = { false, 0, 0 }
    fields[field] = entry
  end
  return entry
end

local function used_value(used_key, field)
  local entry = used_entry(used_key, field)
  if entry[1] == false then
    entry[1] = tonumber(redis.call("HGET", used_key, field) or "0")
  end
  return entry[1] + entry[2]
end

-- The room a PRE_PAID period has left: its limit less what is consumed and held.
local function room_of(used_key, c)
  if c[2] < 0 or not c[3] then return nil end -- unlimited, or pay-per-use
  local room = c[2] - used_value(used_key, c[1]) - held_value(used_key, c[1])
  if room < 0 then room = 0 end
  return room
end

local function add_to(used_key, field, delta)
  if delta == 0 then return end
  local entry = used_entry(used_key, field)
  entry[2] = entry[2] + delta
  -- the highest this batch carried the counter (a LATEST level may fall again):
  -- threshold crossings are judged on it, so they never depend on the batching
  if entry[2] > entry[3] then entry[3] = entry[2] end
  pending[field] = (pending[field] or 0) + delta
  allocation[#allocation + 1] = field .. "=" .. int_str(delta)
end

-- LATEST: the latest sample each period took, { ts, event key } or false, read
-- once a batch ("t:<field>" in the used hash: "<ts>\t<key>") and written at its end.
local latest = {}
local function latest_of(used_key, field)
  local fields = table_at(latest, used_key)
  local seen = fields[field]
  if seen == nil then
    seen = false
    local text = redis.call("HGET", used_key, "t:" .. field)
    if text then
      local tab = string.find(text, "\t", 1, true)
      seen = { tonumber(string.sub(text, 1, tab - 1)), string.sub(text, tab + 1) }
    end
    fields[field] = seen
  end
  return seen
end
