--[[ holds_expire.lua: free the holds past their expiry of customers nobody read
since (a tidy-up: every read and count frees them itself, by time alone).

KEYS[1]  holds due: used key -> the earliest expiry of its live holds
ARGV[1]  now, epoch microseconds
ARGV[2]  the most customers to look at in this call

Returns how many customers were looked at (ARGV[2]: call again).
]]

local holds_due_key = KEYS[1]
local now_us = tonumber(ARGV[1])

--- @include "ingest/holds"

local due = redis.call("ZRANGEBYSCORE", holds_due_key, "-inf", ARGV[1], "LIMIT", 0, ARGV[2])
for _, used_key in ipairs(due) do
  purge_holds(used_key)
  rearm_due(used_key) -- also when a settle or release left its entry early
end
return #due
