--[[ ingest/hold_ops.lua: making a hold and judging a settle (ingest.lua's hold
operations; the hold record's fields are listed in ingest/holds.lua).

Holds (ingest/holds.lua, docs/holds.md): a hold is a strict reservation whose
units are held (the used hash's "h:" fields) instead of consumed; held units take
room from every later reserve, hold and burn-down. Settling is this event counted
as usage at the hold's time (never late, never a marker question: the hold
record's status says whether it was settled, atomically with the count), with the
hold's units given back in the same step; a settle of a settled hold answers d
for the same quantity and c for another.

Needs (bound by the including script): now_us, holds_due_key.
Defines: hold_op, hold_first_look, create_hold, mark_settled.
]]

--- @include "ingest/used"
--- @include "ingest/holds"

-- A hold's ARGV: "H<hold key>\t<expiry us>\t<most live holds>\t<meta JSON>".
local function hold_args(op)
  local tab1 = string.find(op, "\t", 2, true)
  local tab2 = string.find(op, "\t", tab1 + 1, true)
  local tab3 = string.find(op, "\t", tab2 + 1, true)
  return tonumber(string.sub(op, tab1 + 1, tab2 - 1)),
    tonumber(string.sub(op, tab2 + 1, tab3 - 1)), string.sub(op, tab3 + 1)
end

local function create_hold(hold_key, op, used_key, signature, qty)
  local expires, _, meta = hold_args(op)
  redis.call("HSET", hold_key, "s", "held", "a", table.concat(allocation, ","),
    "e", int_str(expires), "u", used_key, "k", signature, "q", int_str(qty), "m", meta)
  keep_until(hold_key, expires)
  redis.call("ZADD", holds_key(used_key), int_str(expires), hold_key)
  local due = redis.call("ZSCORE", holds_due_key, used_key)
  if not due or tonumber(due) > expires then
    redis.call("ZADD", holds_due_key, int_str(expires), used_key)
  end
end

-- ARGV's hold operation: its kind ("" none, "H" hold, "S" settle) and hold key.
local function hold_op(op)
  local kind = string.sub(op, 1, 1)
  if kind == "" then return "", nil end
  if kind == "H" then return kind, string.sub(op, 2, string.find(op, "\t", 2, true) - 1) end
  return kind, string.sub(op, 2)
end

-- Settle: the hold's status decides (never a marker); nil when it may be counted.
local function settle_code(hold_key, used_key, qty_text)
  local rec = redis.call("HMGET", hold_key, "s", "e", "a", "sq", "u")
  local status = rec[1]
  if not status or rec[5] ~= used_key then return "g", nil end
  if status == "held" and tonumber(rec[2]) <= now_us then
    purge_holds(used_key)
    return "e", nil
  end
  if status == "held" then return nil, rec[3] end
  if status == "settled" then return (rec[4] == qty_text) and "d" or "c", nil end
  return status == "released" and "f" or "e", nil
end

-- The code of a hold operation decided before any counting (nil: count it), and for
-- a settle to be counted, the hold's allocation, given back in this call's figures.
local function hold_first_look(op, kind, hold_key, used_key, signature, qty_text)
  if kind == "H" then
    -- a hold: the hold record is its idempotency key
    local seen = redis.call("HGET", hold_key, "k")
    if seen then return (seen == signature) and "d" or "c", nil end
    purge_holds(used_key)
    local _, most = hold_args(op)
    if redis.call("ZCARD", holds_key(used_key)) >= most then return "t", nil end
    return nil, nil
  end
  local code, allocation_text = settle_code(hold_key, used_key, qty_text)
  if code == nil then held_give_back(used_key, allocation_text) end
  return code, allocation_text
end

local function mark_settled(hold_key, used_key, qty_text)
  redis.call("HSET", hold_key, "s", "settled", "sq", qty_text, "at", int_str(now_us))
  redis.call("ZREM", holds_key(used_key), hold_key)
  keep_until(hold_key, now_us)
end
