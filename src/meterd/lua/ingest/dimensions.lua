--[[ ingest/dimensions.lua: dimension filters, the Lua twin of meterd.core.meters.matches
(tests/test_lua_dimensions.py), with a scanner of JSON literals for telling an
integer from a float in the event's record. Pure but for cjson (Redis has it).

Defines: literal_at, dims_match.
]]

-- The literal text of the value at data path segs in a record (JSON as
-- event_records.record_json writes it: no spaces, object keys unique), or nil.
local function skip_string(text, pos)
  local p = pos + 1
  while true do
    local q = string.find(text, '["\\]', p)
    if string.byte(text, q) == 92 then p = q + 2 else return q + 1 end
  end
end

local function skip_value(text, pos)
  local b = string.byte(text, pos)
  if b == 34 then return skip_string(text, pos) end
  if b == 123 or b == 91 then
    local depth, p = 0, pos
    while true do
      local q = string.find(text, '[][{}"]', p)
      b = string.byte(text, q)
      if b == 34 then
        p = skip_string(text, q)
      else
        depth = depth + ((b == 123 or b == 91) and 1 or -1)
        p = q + 1
        if depth == 0 then return p end
      end
    end
  end
  return (string.find(text, "[,}%]]", pos))
end

local function literal_at(text, pos, segs, i)
  if string.byte(text, pos) ~= 123 or string.byte(text, pos + 1) == 125 then return nil end
  local p = pos + 1
  while true do
    local after = skip_string(text, p)
    local value_pos = after + 1 -- past the colon
    if string.sub(text, p + 1, after - 2) == segs[i] then
      if i == #segs then
        return string.sub(text, value_pos, skip_value(text, value_pos) - 1)
      end
      return literal_at(text, value_pos, segs, i + 1)
    end
    p = skip_value(text, value_pos)
    if string.byte(text, p) ~= 44 then return nil end
    p = p + 1
  end
end

-- Dimensions: an entitlement with filters ("f": path -> value) takes only usage
-- whose event data has those values (meterd.core.meters.matches): JSON scalars of the
-- same kind, so a number matches only if the event wrote an integer (cjson reads
-- 2.0 as 2: the record's text tells them apart, read only when a number matches).
local data_of = {}
local function dims_match(e, i, record)
  if e.f == nil then return true end
  local data = data_of[i]
  if data == nil then
    -- floats: whether the record holds one anywhere (nil: not looked yet);
    -- integer: path -> whether the number there was written as an integer
    data = { d = cjson.decode(record).d, floats = nil, integer = {} }
    data_of[i] = data
  end
  for path, wanted in pairs(e.f) do
    local v = data.d
    for segment in string.gmatch(path, "[^.]+") do
      if type(v) ~= "table" then v = nil break end
      v = v[segment]
    end
    if v == nil or type(v) ~= type(wanted) or v ~= wanted then return false end
    if type(v) == "number" then
      if data.floats == nil then data.floats = string.find(record, "%d[.eE]") ~= nil end
      local integer = not data.floats or data.integer[path]
      if integer == nil then
        local segs = { "d" }
        for segment in string.gmatch(path, "[^.]+") do segs[#segs + 1] = segment end
        local literal = literal_at(record, 1, segs, 1)
        integer = literal ~= nil and string.find(literal, "[.eE]") == nil
        data.integer[path] = integer
      end
      if not integer then return false end
    end
  end
  return true
end
