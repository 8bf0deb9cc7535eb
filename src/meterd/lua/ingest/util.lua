--[[ ingest/util.lua: small helpers every ingest fragment uses. Pure (no redis.call).

Defines: OPEN, int_str, table_at.
]]

-- Instants before 1970 are negative: only OPEN (-1) means "no end".
local OPEN = -1

-- The decimal text of an integer n (|n| < 2^53, as every number here is). "%d" casts
-- to a C long, exact far beyond 2^53, and is cheaper than "%.0f" (which it equals
-- on integers, except that -0 gives "0").
local function int_str(n)
  return string.format("%d", n)
end

-- The table under key in t, created empty the first time.
local function table_at(t, key)
  local inner = t[key]
  if inner == nil then
    inner = {}
    t[key] = inner
  end
  return inner
end
