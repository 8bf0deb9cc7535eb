--[[ ingest/write_counts.lua: the end of a counting call: the used totals, the
latest samples and the pending deltas its caches summed, each written once per
touched field, with the threshold crossings the totals passed.

Needs (bound by the including script): big_key, pending_key, pending_since_key;
ARGV[1] (now).
Defines: write_counts.
]]

--- @include "ingest/util"
--- @include "ingest/used"
--- @include "ingest/thresholds"

local function write_counts()
  enter("write_used")
  for used_key, fields in pairs(used) do
    for field, entry in pairs(fields) do
      if entry[2] ~= 0 then
        local after = tonumber(redis.call("HINCRBY", used_key, field, int_str(entry[2])))
        if after > BIG then redis.call("SADD", big_key, field) end
        local before = after - entry[2]
        note_crossings(field, before, before + entry[3])
      elseif entry[3] > 0 and watched(field) then
        -- a LATEST level that rose and fell back within the batch
        local before = used_value(used_key, field)
        note_crossings(field, before, before + entry[3])
      end
    end
  end
  enter("write_latest")
  for used_key, fields in pairs(latest) do
    local args = {}
    for field, seen in pairs(fields) do
      if seen and seen[3] then
        args[#args + 1] = "t:" .. field
        args[#args + 1] = int_str(seen[1]) .. "\t" .. seen[2]
      end
    end
    if #args > 0 then redis.call("HSET", used_key, unpack(args)) end
  end
  enter("write_pending")
  local wrote = false
  for field, delta in pairs(pending) do
    if delta ~= 0 then
      redis.call("HINCRBY", pending_key, field, int_str(delta))
      wrote = true
    end
  end
  if wrote then
    -- The flush lag is measured from the first write a pending hash got.
    redis.call("SET", pending_since_key, ARGV[1], "NX")
  end
end
