--[[ ingest/status.lua: whether an entitlement takes usage timed at ts, the Lua twin
of meterd.core.lifecycle.status_at / usable_at (tests/test_lua_status.py). The
resolution entry carries s (starts), u (usable until: the end of grace or of the
term, or the termination; OPEN if none) and x (suspensions). Pure.

Defines: in_window, suspended_at.
]]

--- @include "ingest/util"

-- starts <= ts < usable until (suspensions aside: see suspended_at)
local function in_window(e, ts)
  return e.s <= ts and (e.u == OPEN or ts < e.u)
end

local function suspended_at(e, ts)
  if e.x == nil then return false end
  for _, span in ipairs(e.x) do
    if span[1] <= ts and (span[2] == OPEN or ts < span[2]) then return true end
  end
  return false
end
