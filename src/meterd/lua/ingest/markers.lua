--[[ ingest/markers.lua: the dedupe markers, a linear hash of integer sets per
generation of acceptance times (docs/architecture.md, "Dedupe").

Needs (bound by the including script): now_us, hot_us, generation_us,
marker_prefix, generations_key.
Defines: metas, marker_hit, add_marker, write_markers, expire_generations, save_generations.
]]

--- @include "ingest/util"

-- Markers: one linear hash of integer sets per generation of acceptance times.
-- A generation's meta hash holds L (level), p (split pointer) and n (markers);
-- its sets are "<meta key>:<shard>", shards 0 .. 2^L + p - 1.
local LOAD = 200 -- markers per set on average; at most ~2 x LOAD before a split
local current_generation = math.floor(now_us / generation_us)
local oldest_live = math.floor((now_us - hot_us) / generation_us)
local metas = {}

-- A generation's linear hash: m.mod = 2^L; m.shards: the key of each shard (which
-- does not depend on the level), built once a call.
local function set_level(m, L, p)
  m.L, m.p, m.mod, m.mod2 = L, p, 2 ^ L, 2 ^ (L + 1)
  if m.shards == nil then m.shards = {} end
end

local function meta(g)
  local m = metas[g]
  if m == nil then
    local key = marker_prefix .. int_str(g)
    local v = redis.call("HMGET", key, "L", "p", "n")
    m = { key = key, n = tonumber(v[3] or "0"), added = 0 }
    set_level(m, tonumber(v[1] or "0"), tonumber(v[2] or "0"))
    m.stored = v[1] ~= false
    metas[g] = m
  end
  return m
end

local function shard_key(m, digest)
  local a = digest % m.mod
  if a < m.p then a = digest % m.mod2 end
  local key = m.shards[a]
  if key == nil then
    key = m.key .. ":" .. int_str(a)
    m.shards[a] = key
  end
  return key
end

local function split(m)
  local bit = m.mod
  local old = m.key .. ":" .. int_str(m.p)
  local new = m.key .. ":" .. int_str(m.p + bit)
  for _, v in ipairs(redis.call("SMEMBERS", old)) do
    if math.floor(tonumber(v) / bit) % 2 == 1 then
      redis.call("SMOVE", old, new, v)
    end
  end
  if m.p + 1 == bit then
    set_level(m, m.L + 1, 0)
  else
    m.p = m.p + 1
  end
end

-- The current generation, presized when this call starts it: a new generation takes
-- the level and split pointer its predecessor has reached, so a steady flow of
-- markers fills it without splits (each split moves half a set). Any (L, p) is a
-- valid empty linear hash, and the meta stores it, so every reader finds its sets.
local function current_meta()
  local m = meta(current_generation)
  if not m.sized then
    m.sized = true
    if m.n == 0 and not m.stored then
      local prev = meta(current_generation - 1)
      set_level(m, prev.L, prev.p)
    end
  end
  return m
end

-- This call's new markers, written in bulk (write_markers): shard key -> digests,
-- and every digest, which marker_hit finds as it would find the set's. They are
-- written, and the generation split, as soon as the load calls for a split, as a
-- marker at a time would: so no set ever passes ~2 x LOAD (Redis keeps it an
-- intset), and a shard key stays right until then. A presized generation seldom
-- splits, so most calls write each set once.
local new_markers = {}
local new_count = 0
local new_digests = {}

-- One SADD per shard (at most 1,000 members each), then the splits the load needs.
local function write_markers()
  local m = metas[current_generation]
  if m == nil or new_count == 0 then return end
  local added = 0
  for shard, texts in pairs(new_markers) do
    for from = 1, #texts, 1000 do
      added = added + redis.call("SADD", shard, unpack(texts, from, math.min(from + 999, #texts)))
    end
  end
  new_markers, new_count = {}, 0
  m.n = m.n + added
  m.added = m.added + added
  while m.n > LOAD * (2 ^ m.L + m.p) do split(m) end
end

local function add_marker(digest, text)
  local m = current_meta()
  local shard = shard_key(m, digest)
  local texts = new_markers[shard]
  if texts == nil then
    texts = {}
    new_markers[shard] = texts
  end
  texts[#texts + 1] = text
  new_count = new_count + 1
  new_digests[text] = true
  if m.n + new_count > LOAD * (2 ^ m.L + m.p) then write_markers() end
end

local function marker_hit(digest, text)
  if new_digests[text] then return true end
  for g = current_generation, oldest_live, -1 do -- newest first: redeliveries are recent
    local m = meta(g)
    if m.n > 0 and redis.call("SISMEMBER", shard_key(m, digest), text) == 1 then
      return true
    end
  end
  return false
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
