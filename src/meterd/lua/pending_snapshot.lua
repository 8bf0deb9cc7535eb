--[[ pending_snapshot.lua: read what Redis holds for some periods, atomically.

KEYS[1]  pending hash
KEYS[2]  flush batch hash
KEYS[3]  inflight batch id
KEYS[4]  flush epoch
ARGV     the period fields to read

Returns { epoch, inflight id or "", pending values..., in-flight values... }.
The reader adds the in-flight values only if the database has not committed
that batch yet, and retries if the epoch moved while it read the database.
]]

local pending_key = KEYS[1]
local batch_key = KEYS[2]
local inflight_key = KEYS[3]
local epoch_key = KEYS[4]

local result = {
  redis.call("GET", epoch_key) or "0",
  redis.call("GET", inflight_key) or "",
}
for _, field in ipairs(ARGV) do
  result[#result + 1] = redis.call("HGET", pending_key, field) or "0"
end
for _, field in ipairs(ARGV) do
  result[#result + 1] = redis.call("HGET", batch_key, field) or "0"
end
return result
