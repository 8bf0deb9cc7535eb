--[[ hold_release.lua: give a hold's units back (docs/holds.md), idempotently.

KEYS[1]  the hold's record (ingest/holds.lua lists its fields)
KEYS[2]  the used hash of the hold's customer
KEYS[3]  holds due: used key -> the earliest expiry of its live holds
ARGV[1]  now, epoch microseconds

Returns the hold's status after the call: "released" (by this call or before),
"settled", "expired" (it reached its expiry first: its units were freed then),
or "" when there is no such hold (or it is not this customer's).
]]

local hold_key = KEYS[1]
local used_key = KEYS[2]
local holds_due_key = KEYS[3]
local now_us = tonumber(ARGV[1])

--- @include "ingest/holds"

local owner = redis.call("HGET", hold_key, "u")
if owner ~= used_key then return "" end
purge_holds(used_key) -- a hold past its expiry is expired, never released
local rec = redis.call("HMGET", hold_key, "s", "a")
if rec[1] ~= "held" then return rec[1] end
for _, part in ipairs(hold_fields(rec[2])) do add_held(used_key, part[1], -part[2]) end
redis.call("HSET", hold_key, "s", "released", "at", ARGV[1])
redis.call("ZREM", holds_key(used_key), hold_key)
keep_until(hold_key, now_us)
rearm_due(used_key)
return "released"
