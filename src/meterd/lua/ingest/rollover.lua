--[[ ingest/rollover.lua: what a renewed PRE_PAID term carries from the term before
it, the Lua twin of meterd/core/rollover.py (tests/test_rollover_model.py holds the
two together). Pure: the caller reads the consumptions (the used hash) and passes them
(rolled_limit: as a function used_of(field)).

Figures are integer units of the feature's scale, -1 unlimited (as in the resolution
data). Held units are not consumed: callers pass the used value alone.

Defines: rollover_carried, rollover_term_limit, rollover_effective_limit, renews_at,
shapes, walk_shape, rolled_limit.
]]

--- @include "ingest/calendar"
--- @include "ingest/periods"

-- MIN(rollover_max, MAX(remaining, rollover_min)); an unlimited term before carries
-- rollover_max.
local function rollover_carried(limit_before, consumed_before, rmax, rmin)
  if limit_before < 0 then return rmax end
  local remaining = limit_before - consumed_before
  if remaining < rmin then remaining = rmin end
  if remaining > rmax then remaining = rmax end
  return remaining
end

local function rollover_term_limit(base, limit_before, consumed_before, rmax, rmin)
  if base < 0 then return -1 end
  return base + rollover_carried(limit_before, consumed_before, rmax, rmin)
end

-- The limit of the last term of a run whose first term's limit is final: consumed[i]
-- is the consumption of the run's term i, bases[i] the renewal quantity of term i + 1.
local function rollover_effective_limit(final_limit, consumed, bases, rmax, rmin)
  local limit = final_limit
  for i = 1, #bases do
    limit = rollover_term_limit(bases[i], limit, consumed[i], rmax, rmin)
  end
  return limit
end

-- Where the period a field names starts: "<entitlement hex>:<start epoch us>".
local function field_start(field)
  return tonumber(string.sub(field, string.find(field, ":", 1, true) + 1))
end

-- Whether a period of e starting at start is a renewed term: a boundary of the
-- calendar after the entitlement's start (meterd.core.lifecycle.renews_at).
local function renews_at(e, start)
  local r = e.r
  if r == nil or start <= e.s then return false end
  return term_start(r, term_index(r, start)) == start
end

-- period_of's answer for (e, ts), its limit the effective one: for a renewed term of
-- an entitlement that rolls over (e.o = { rollover max, min, { field = final carry } }),
-- its quantity plus what the term before carried, computed from the consumptions
-- (used_of(field): the used value; held units are not consumed) back to a term whose
-- limit is final: a stored final carry, the first term, or a period off the calendar.
-- The twin of meterd.core.lifecycle.limit_units.
-- The walk's shape for a period of e: { chain = { { field, base }, ... } (renewed
-- terms whose carry is computed, latest first), first = the field of the term whose
-- limit is final, final = that limit }. It depends on the entry alone, not on the
-- totals: kept per entry and field for the script call (a batch).
local shapes = {}

local function walk_shape(e, field, limit)
  local of_entry = shapes[e]
  if of_entry == nil then
    of_entry = {}
    shapes[e] = of_entry
  end
  local shape = of_entry[field]
  if shape ~= nil then return shape end
  local o = e.o
  local chain = {}
  local f, l, s = field, limit, field_start(field)
  local final = nil
  while true do
    if l < 0 then final = -1 break end
    local stored = o[3][f]
    if stored ~= nil then final = l + stored break end
    if not renews_at(e, s) then final = l break end
    local bf, bl = period_of(e, s - 1, nil)
    if bf == nil then final = l break end
    chain[#chain + 1] = { f, l }
    f, l, s = bf, bl, field_start(bf)
  end
  shape = { chain = chain, first = f, final = final }
  of_entry[field] = shape
  return shape
end

local function rolled_limit(e, ts, month, used_of)
  local field, limit, prepaid, keep = period_of(e, ts, month)
  local o = e.o
  if field == nil or o == nil or not prepaid or o[1] <= 0 then
    return field, limit, prepaid, keep
  end
  local shape = walk_shape(e, field, limit)
  local chain = shape.chain
  local eff = shape.final
  local earlier = shape.first
  -- fold forward on the totals as they stand (this batch's deltas included)
  for i = #chain, 1, -1 do
    eff = rollover_term_limit(chain[i][2], eff, used_of(earlier), o[1], o[2])
    earlier = chain[i][1]
  end
  return field, eff, prepaid, keep
end
