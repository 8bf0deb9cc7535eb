--[[ ingest/burn_down.lua: how an event's units are shared down its candidate
periods (SUM, COUNT, UNIQUE_COUNT burn down; MAX and LATEST share a level).

Needs (bound by the including script): strict.
Defines: plan_sum, level_share, unique_key, seen_value.

Burn-down: the resolution data lists the customer's entitlements for the
feature already in order (priority, soonest end, oldest). The candidates of an
event are the usable ones at its time, each with the period containing that time.
* SUM, COUNT, UNIQUE_COUNT (a new value is one unit): each candidate takes what
  room it has left; what is left after the last one is counted on the last one,
  where it shows as overage. A counted value goes into the set of every
  candidate's period; a value in any of them counts nothing.
* MAX, LATEST: the sample is a level shared down its candidates (each takes up
  to its limit, the last the rest), and each candidate's period judges its own
  share: MAX keeps the largest share any sample gave it, LATEST its share of the
  latest sample (time, then event key) it took. So a period's figure is a
  function of the events and the grants, never of arrival order or batching.
]]

--- @include "ingest/used"

-- SUM: burn qty down the candidates (what exceeds every limit lands on the last):
-- the units each candidate would take (moves[j]), and what no room took (strict).
local function plan_sum(used_key, cands, qty, moves)
  local left = qty
  for j, c in ipairs(cands) do
    if left <= 0 then break end
    local take = left
    if strict then
      local room = room_of(used_key, c)
      if room ~= nil and room < take then take = room end
    elseif j < #cands and c[2] >= 0 then
      -- held units take room: usage passes a hold's share to the next candidate
      local room = c[2] - used_value(used_key, c[1]) - held_value(used_key, c[1])
      if room < 0 then room = 0 end
      if room < take then take = room end
    end
    if take > 0 then
      moves[j] = take
      left = left - take
    end
  end
  return left
end

-- MAX and LATEST: a sample's value is a level, shared down the candidates live at
-- its time like a sum (each takes up to its limit, the last the rest). Each
-- candidate's period judges the sample on its own share: MAX keeps the largest
-- share any sample gave it, LATEST its share of the latest sample it took (by
-- event time, ties by event key). A period's figure is then a function of the
-- events and the grants, never of their order of arrival or of the batching.
local function level_share(cands, j, level)
  local left = level
  for k = 1, j - 1 do
    local limit = cands[k][2]
    if limit < 0 or limit >= left then return 0 end -- unlimited, or room for it all
    left = left - limit
  end
  local limit = cands[j][2]
  if j < #cands and limit >= 0 and limit < left then return limit end
  return left
end

-- UNIQUE_COUNT: the set of values counted in one period, kept until the period
-- (and late events into it) can no longer take usage.
local function unique_key(used_key, field)
  return used_key .. ":u:" .. field
end

local function seen_value(used_key, cands, value)
  for _, c in ipairs(cands) do
    if redis.call("SISMEMBER", unique_key(used_key, c[1]), value) == 1 then return true end
  end
  return false
end
