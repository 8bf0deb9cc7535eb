--[[ flush_end.lua: forget a batch once the database holds it.

KEYS[1]  inflight batch id (string)
KEYS[2]  flush batch hash
KEYS[3]  batch since (epoch us of the batch's first write)
KEYS[4]  flush events (the records of the batch's events)
KEYS[5]  flush sequence
KEYS[6…] consumed-units hashes (P:used:{tag}) of events the database found
         counted twice (see UsageStore.apply_flush_batch)
ARGV[1]  id of the batch the caller committed
ARGV[2…] triples: index into KEYS[6…] (1-based), period field, units to add
         (negative: what the duplicates added)

The units are taken back in the same step as the batch is removed, so a flush
that crashes before this script and runs again takes them back exactly once.
A field no longer there (its period reloaded since) is left alone.

Returns 1 if the batch was removed, 0 if another batch is in flight (a
concurrent flush already finished this one and started the next).
]]

local inflight_key = KEYS[1]
local batch_key = KEYS[2]
local batch_since_key = KEYS[3]
local batch_events_key = KEYS[4]
local seq_key = KEYS[5]
local batch_id = ARGV[1]

if redis.call("GET", inflight_key) == batch_id then
  for i = 2, #ARGV, 3 do
    local used_key = KEYS[5 + tonumber(ARGV[i])]
    if redis.call("HEXISTS", used_key, ARGV[i + 1]) == 1 then
      redis.call("HINCRBY", used_key, ARGV[i + 1], ARGV[i + 2])
    end
  end
  redis.call("UNLINK", batch_key, inflight_key, batch_since_key, batch_events_key)
  redis.call("INCR", seq_key)
  return 1
end
return 0
