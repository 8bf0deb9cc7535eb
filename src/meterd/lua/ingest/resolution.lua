--[[ ingest/resolution.lua: reads a customer's resolution data (storage/resolution.py
writes it) into the list of entry tables the other fragments judge with. Pure but
for cjson (Redis has it).

Two forms, told apart by the first byte: "F" flat (the common shape: no filters,
rollover, suspensions, alert rules or allotments), read here; anything else is JSON
(every form an earlier version wrote), read by cjson. Both give the same tables:
numbers as Lua numbers (cjson's are doubles too), "r" and "p" as lists.

Flat: "F", then one line per entitlement, its fields joined by tabs: i, s, u, e, g,
b, q, z, k, then r (items joined by ",", the first a letter; empty: none) and p
(periods "start,end,limit,field" joined by ";").

Defines: decode_resolution.
]]

local FLAT_LINE = "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t"
  .. "([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$"

local function flat_entry(line)
  local i, s, u, e, g, b, q, z, k, r, p = string.match(line, FLAT_LINE)
  local periods = {}
  for start, finish, limit, field in string.gmatch(p, "(%-?%d+),(%-?%d+),(%-?%d+),([^;]+)") do
    periods[#periods + 1] = { tonumber(start), tonumber(finish), tonumber(limit), field }
  end
  local entry = { i = i, s = tonumber(s), u = tonumber(u), e = tonumber(e), g = tonumber(g),
    b = b, q = tonumber(q), z = tonumber(z), k = tonumber(k), p = periods }
  if r ~= "" then
    local renewal = { string.sub(r, 1, 1) }
    for n in string.gmatch(r, "(%-?%d+)") do renewal[#renewal + 1] = tonumber(n) end
    entry.r = renewal
  end
  return entry
end

local function decode_resolution(raw)
  if string.byte(raw, 1) ~= 70 then return cjson.decode(raw) end -- 70: "F"
  local entries = {}
  for line in string.gmatch(string.sub(raw, 2), "[^\n]+") do
    entries[#entries + 1] = flat_entry(line)
  end
  return entries
end
