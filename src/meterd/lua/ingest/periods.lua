--[[ ingest/periods.lua: which period of an entitlement an instant falls in, the Lua
twin of meterd.core.lifecycle.period_at (on the resolution entry, storage/resolution.py).
Pure.

Defines: period_of.

Which entitlement, which period (meterd.core.lifecycle.status_at and period_at in
Python are the same rules): an entitlement takes usage timed at ts when
starts <= ts < usable until ("u": the end of grace or of the term, or the
termination; -1 open) and ts lies in none of its suspensions ("x"); the
period is the stored one containing ts, else for a renewing entitlement ("r")
the term of the calendar containing ts (starting where the stored periods
end, if that is later), else the last stored one (grace).
]]

--- @include "ingest/util"
--- @include "ingest/calendar"

-- The hash field, limit and whether PRE_PAID of the period of e containing ts, and
-- until when that period can take usage (-1: open): its end, or for the last stored
-- period of an entitlement that does not renew, the end of its usable window (grace).
local function period_of(e, ts, month)
  if e.b == "U" then
    return e.i .. ":" .. month, e.q, false, add_months(tonumber(month), 1)
  end
  local latest, last = nil, nil
  for _, p in ipairs(e.p) do
    if p[1] <= ts and (latest == nil or p[1] > latest[1]) then latest = p end
    if last == nil or p[1] > last[1] then last = p end
  end
  local r = e.r
  if latest ~= nil and (latest[2] == OPEN or ts < latest[2]) then
    local keep = latest[2]
    if r == nil and latest == last and keep ~= OPEN then
      keep = e.u == OPEN and OPEN or math.max(keep, e.u)
    end
    return latest[4], latest[3], true, keep
  end
  if r ~= nil and ts >= e.s then
    local k = term_index(r, ts)
    local start = term_start(r, k)
    if latest ~= nil and latest[2] > start then start = latest[2] end
    return e.i .. ":" .. int_str(start), r[4], true, term_start(r, k + 1)
  end
  if latest ~= nil then -- in grace: the last period
    return latest[4], latest[3], true, e.u == OPEN and OPEN or math.max(latest[2], e.u)
  end
  return nil, nil, false, nil
end
