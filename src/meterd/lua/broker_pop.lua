--[[ broker_pop.lua: take one Celery message and record it as unacknowledged, atomically.

KEYS[1 .. n-2]  queue lists, in the order to try (kombu's queue and priority lists)
KEYS[n-1]       kombu's unacked index (sorted set: delivery tag -> time)
KEYS[n]         kombu's unacked hash (delivery tag -> [message, exchange, routing key])
ARGV[1]         now, seconds since the epoch (kombu's clock for the visibility timeout)

Returns { queue list, message } or false when every list is empty.

kombu's Redis transport pops with BRPOP and records the message as unacked
only later, in the worker: a worker killed in between loses the message. Here
both happen in one script, so an unacknowledged message is always either in
its queue or in the unacked hash, from where kombu's visibility-timeout sweep
restores it.
]]

local n = #KEYS
local unacked_index_key = KEYS[n - 1]
local unacked_key = KEYS[n]
local now = ARGV[1]

for i = 1, n - 2 do
  local item = redis.call("RPOP", KEYS[i])
  if item then
    local ok, message = pcall(cjson.decode, item)
    if ok and type(message) == "table" and type(message.properties) == "table" then
      local tag = message.properties.delivery_tag
      local info = message.properties.delivery_info
      if type(tag) == "string" and type(info) == "table" then
        redis.call("ZADD", unacked_index_key, now, tag)
        redis.call("HSET", unacked_key, tag,
          "[" .. item .. "," .. cjson.encode(info.exchange or "") .. ","
          .. cjson.encode(info.routing_key or "") .. "]")
      end
    end
    return { KEYS[i], item }
  end
end
return false
