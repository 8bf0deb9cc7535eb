--[[ ingest/markers.lua: the dedupe markers, a linear hash of integer sets per
generation of acceptance times (docs/architecture.md, "Dedupe").

Needs (bound by the including script): now_us, hot_us, generation_us,
marker_prefix, generations_key.
Defines: metas, marker_hit, add_marker, expire_generations, save_generations.
]]

--- @include "ingest/util"

-- Markers: one linear hash of integer sets per generation of acceptance times.
-- A generation's meta hash holds L (level), p (split pointer) and n (markers);
-- its sets are "<meta key>:<shard>", shards 0 .. 2^L + p - 1.
local LOAD = 200 -- markers per set on average; at most ~2 x LOAD before a split
local current_generation = math.floor(now_us / generation_us)
local oldest_live = math.floor((now_us - hot_us) / generation_us)
local metas = {}

local function meta(g)
  local m = metas[g]
  if m == nil then
    local key = marker_prefix .. int_str(g)
    local v = redis.call("HMGET", key, "L", "p", "n")
    m = { key = key, L = tonumber(v[1] or "0"), p = tonumber(v[2] or "0"),
      n = tonumber(v[3] or "0"), added = 0 }
    metas[g] = m
  end
  return m
end

local function shard_key(m, digest)
  local a = digest % (2 ^ m.L)
  if a < m.p then a = digest % (2 ^ (m.L + 1)) end
  return m.key .. ":" .. int_str(a)
end

local function marker_hit(digest, text)
  for g = current_generation, oldest_live, -1 do -- newest first: redeliveries are recent
    local m = meta(g)
    if m.n > 0 and redis.call("SISMEMBER", shard_key(m, digest), text) == 1 then
      return true
    end
  end
  return false
end

local function split(m)
  local bit = 2 ^ m.L
  local old = m.key .. ":" .. int_str(m.p)
  local new = m.key .. ":" .. int_str(m.p + bit)
  for _, v in ipairs(redis.call("SMEMBERS", old)) do
    if math.floor(tonumber(v) / bit) % 2 == 1 then
      redis.call("SMOVE", old, new, v)
    end
  end
  m.p = m.p + 1
  if m.p == bit then
    m.L = m.L + 1
    m.p = 0
  end
end

local function add_marker(digest, text)
  local m = meta(current_generation)
  if redis.call("SADD", shard_key(m, digest), text) == 1 then
    m.n = m.n + 1
    m.added = m.added + 1
    while m.n > LOAD * (2 ^ m.L + m.p) do split(m) end
  end
end

-- Delete a bounded number of sets of generations past the hot window.
local function expire_generations(budget)
  local dead = redis.call("ZRANGEBYSCORE", generations_key, "-inf", "(" .. int_str(oldest_live),
    "LIMIT", 0, 1)
  if #dead == 0 then return end
  local key = marker_prefix .. dead[1]
  local v = redis.call("HMGET", key, "L", "p")
  local shards = 2 ^ tonumber(v[1] or "0") + tonumber(v[2] or "0")
  local left = tonumber(redis.call("HGET", key, "left") or int_str(shards))
  local doomed = {}
  while left > 0 and #doomed < budget do
    left = left - 1
    doomed[#doomed + 1] = key .. ":" .. int_str(left)
  end
  if #doomed > 0 then redis.call("UNLINK", unpack(doomed)) end
  if left == 0 then
    redis.call("UNLINK", key)
    redis.call("ZREM", generations_key, dead[1])
  else
    redis.call("HSET", key, "left", int_str(left))
  end
end

-- A generation is kept while an acceptance in it is younger than the hot window;
-- its keys carry no TTL (expire_generations deletes them), its meta records where
-- its sets are.
local function save_generations()
  for g, m in pairs(metas) do
    if m.added > 0 then
      redis.call("HSET", m.key, "L", int_str(m.L), "p", int_str(m.p), "n", int_str(m.n))
      redis.call("ZADD", generations_key, int_str(g), int_str(g))
    end
  end
end
