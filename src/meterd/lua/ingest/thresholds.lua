--[[ ingest/thresholds.lua: threshold crossings of PRE_PAID periods (80% and 100%),
recorded in the pending hash for the flush to notify.

Needs (bound by the including script): pending_key; ARGV[1] (now).
Defines: prepaid_limits, threshold_point, note_crossings.
]]

--- @include "ingest/util"

-- field -> limit of a PRE_PAID period (for threshold crossings)
local prepaid_limits = {}
local THRESHOLDS = { 80, 100 }

-- The smallest consumption that is at least pct% of limit, in exact integer steps
-- (limit * pct could pass 2^53).
local function threshold_point(limit, pct)
  if pct == 100 then return limit end
  local q = math.floor(limit / 100)
  local r = limit - 100 * q
  return pct * q + math.ceil(pct * r / 100)
end

-- before: the consumption before the batch; peak: the highest the batch carried it.
local function note_crossings(field, before, peak)
  local limit = prepaid_limits[field]
  if limit == nil then return end
  for _, pct in ipairs(THRESHOLDS) do
    local point = threshold_point(limit, pct)
    if before < point and peak >= point then
      redis.call("HSETNX", pending_key, "n:" .. field .. ":" .. pct, ARGV[1] .. ":" .. int_str(peak))
    end
  end
end
