--[[ holds_read.lua: a customer's consumed and held units of some periods, read
after freeing the holds past their expiry, in one atomic step (the value read).

KEYS[1]  the used hash of the customer: "<ent>:<period>" -> consumed units,
         "h:<ent>:<period>" -> held units
KEYS[2]  holds due: used key -> the earliest expiry of its live holds
ARGV[1]  now, epoch microseconds
ARGV[2...]  the period fields to read

Returns { consumed of each field..., held of each field... } (decimal text).
]]

local used_key = KEYS[1]
local holds_due_key = KEYS[2]
local now_us = tonumber(ARGV[1])

--- @include "ingest/holds"

purge_holds(used_key)
local result = {}
for i = 2, #ARGV do
  result[#result + 1] = redis.call("HGET", used_key, ARGV[i]) or "0"
end
for i = 2, #ARGV do
  result[#result + 1] = redis.call("HGET", used_key, "h:" .. ARGV[i]) or "0"
end
return result
