--[[ rate_limit.lua: take one token from an API key's token bucket.

KEYS[1]  the key's bucket (hash: t = microseconds of the last refill,
         m = micro-tokens in the bucket; absent = full)
ARGV[1]  rate: tokens a second (integer, 1 .. 1,000,000)
ARGV[2]  burst: the bucket's size in tokens (integer, 1 .. 1,000,000)
ARGV[3]  now in epoch microseconds, or "" to read the Redis server's TIME
ARGV[4]  cost in tokens (integer >= 1)

Returns {allowed (1|0), micro-tokens left, microseconds until `cost` tokens
are there (0 when allowed)}.

Integer arithmetic only. Tokens are counted in micro-tokens, so a rate of r
tokens a second refills exactly r micro-tokens a microsecond. Every product
stays below 2^53 (Lua numbers are doubles): the elapsed time is capped at the
time the bucket takes to fill, so elapsed * rate < burst * 10^6 + rate
<= 10^12 + 10^6. The clock never runs backwards for a bucket: a `now` before
its last refill refills nothing and keeps the later time. The bucket
expires once it would be full again: an absent bucket is a full one, so idle
keys cost no memory (under Redis's clock; see the expiry below).
]]

local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[4]) * 1000000
local capacity = burst * 1000000

local now
if ARGV[3] == "" then
  local time = redis.call("TIME")
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
else
  now = tonumber(ARGV[3])
end

local stored = redis.call("HMGET", key, "t", "m")
local last = tonumber(stored[1])
local tokens = tonumber(stored[2])
if last == nil or tokens == nil then
  last = now
  tokens = capacity
elseif now > last then
  local missing = capacity - tokens
  local elapsed = now - last
  if elapsed >= math.ceil(missing / rate) then
    tokens = capacity
  else
    tokens = tokens + elapsed * rate
  end
  last = now
end

local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) / rate)
end

redis.call("HSET", key, "t", last, "m", tokens)
-- Milliseconds until the bucket is full again (then absent means the same), plus a
-- second. Redis expires keys by its own clock: under a caller's clock (tests) the
-- bucket stays a minute longer, so a caller stalled between two takes does not see
-- it expire, and come back full, by a clock the refill does not follow.
local slack = 1000
if ARGV[3] ~= "" then
  slack = 60000
end
redis.call("PEXPIRE", key, math.ceil((capacity - tokens) / rate / 1000) + slack)
return {allowed, tokens, wait}
