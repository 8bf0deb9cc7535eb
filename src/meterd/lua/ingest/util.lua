--[[ ingest/util.lua: small helpers every ingest fragment uses. Pure (no redis.call).

Defines: OPEN, int_str, table_at.
]]

-- Instants before 1970 are negative: only OPEN (-1) means "no end".
local OPEN = -1

local function int_str(n)
  return string.format("%.0f", n)
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
