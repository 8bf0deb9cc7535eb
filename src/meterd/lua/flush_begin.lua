--[[ flush_begin.lua: hand the pending deltas to a flush, or resume a crashed one.

KEYS[1]  pending hash ("<ent>:<period>" -> micro-units)
KEYS[2]  flush batch hash (the pending hash, renamed)
KEYS[3]  inflight batch id (string)
KEYS[4]  flush epoch (counter, bumped at every new batch)
KEYS[5]  pending since (epoch us of the pending hash's first write)
KEYS[6]  batch since (the same, for the batch in flight)
KEYS[7]  pending events (event key -> record, see ingest.lua)
KEYS[8]  flush events (the pending events, renamed)
KEYS[9]  flush sequence (bumped here and by flush_end.lua: ingest's confirmed
         calls use it to see that a flush moved events while they searched the log)
KEYS[10] flush pause (set by a correction that recounts a level period from the
         log and the waiting events: no new batch begins while it is set)
ARGV[1]  id for a new batch

Returns the id of the batch to apply: the one already in flight if a previous
flush died before finishing it (a pause does not hold that one back), else ARGV[1]
after renaming pending into the batch hash (and the pending events with it: the
counts and the records of the events counted travel together). Returns false if
there is nothing to flush, or while a pause is set. New usage keeps landing in a
fresh pending hash meanwhile.
]]

local pending_key = KEYS[1]
local batch_key = KEYS[2]
local inflight_key = KEYS[3]
local epoch_key = KEYS[4]
local pending_since_key = KEYS[5]
local batch_since_key = KEYS[6]
local events_key = KEYS[7]
local batch_events_key = KEYS[8]
local seq_key = KEYS[9]
local pause_key = KEYS[10]
local new_id = ARGV[1]

local current = redis.call("GET", inflight_key)
if current then
  return current
end
if redis.call("EXISTS", pending_key, events_key) == 0 or redis.call("EXISTS", pause_key) == 1 then
  return false
end
redis.call("INCR", epoch_key)
redis.call("INCR", seq_key)
if redis.call("EXISTS", pending_key) == 1 then
  redis.call("RENAME", pending_key, batch_key)
end
if redis.call("EXISTS", events_key) == 1 then
  redis.call("RENAME", events_key, batch_events_key)
end
if redis.call("EXISTS", pending_since_key) == 1 then
  redis.call("RENAME", pending_since_key, batch_since_key)
end
redis.call("SET", inflight_key, new_id)
return new_id
