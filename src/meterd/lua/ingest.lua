--[[ ingest.lua: count one batch of validated usage events, atomically.

KEYS[1]                 pending hash: "<ent>:<period>" -> micro-units not yet flushed
KEYS[2]                 pending since: when the pending hash got its first write (epoch us)
KEYS[3]                 event stats hash: outcome -> events (usage only, not reservations)
KEYS[4]                 pending events hash: event key -> record (the event log's rows to be)
KEYS[5]                 the same, renamed for the flush in flight
KEYS[6]                 flush sequence (bumped when a flush begins and when it ends)
KEYS[7]                 marker generations (sorted set: generation -> generation)
KEYS[8]                 big counters: the used fields above 2^52 units (a set)
KEYS[2i + 7]            resolution data of event i      (string, JSON, see resolution.py)
KEYS[2i + 8]            used hash of event i's customer "<ent>:<period>" -> units, and
                        "t:<ent>:<period>" -> "<ts>\t<event key>" of the period's latest
                        LATEST sample; "<this key>:u:<ent>:<period>": the set of the
                        values a UNIQUE_COUNT period counted
ARGV[1]                 now, epoch microseconds
ARGV[2]                 late window, microseconds: older events are "late"
ARGV[3]                 hot window, microseconds: how long a marker is kept after acceptance
ARGV[4]                 "1": strict (a reservation), "0": usage (overage allowed)
ARGV[5]                 "" : first look; else the flush sequence the caller read before it
                        searched the event log for these events (a confirmed call)
ARGV[6]                 length of a marker generation, microseconds
ARGV[7]                 marker key prefix ("<prefix>:dm:")
ARGV[8]                 future skew, microseconds
ARGV[9]                 most events that may wait for a flush (backpressure)
ARGV[8i + 2]            event time, epoch microseconds
ARGV[8i + 3]            start of the UTC month of the event time, epoch microseconds
ARGV[8i + 4]            value, integer units of the feature's scale (10^-scale; >= 0)
ARGV[8i + 5]            target entitlement id (hex) or ""
ARGV[8i + 6]            event key "<org>:<len>:<source>:<id>" (the pending events field)
ARGV[8i + 7]            marker digest: an integer below 2^52, as decimal text
ARGV[8i + 8]            the event's record (JSON) for the log
ARGV[8i + 9]            aggregation: "S" sum (and count), "M" max, "L" latest, or
                        "U" followed by the distinct value (JSON text) of a unique
                        count (meterd.domain.Aggregation)

Dedupe in two tiers (docs/architecture.md, "Dedupe"). The invariant: an accepted
event is found by its marker, in the pending events (KEYS[4], KEYS[5]), or in the
event log.
* Markers: the digest of every accepted event goes into the marker generation of
  its acceptance time (generations of ARGV[6]; kept while any acceptance in them
  is younger than the hot window). A generation is a linear hash of integer sets
  of at most ~2 x LOAD members each, so Redis keeps every set as an intset: 8
  bytes a marker. Generations older than the hot window are deleted a bounded
  number of keys per call.
* First look: an event older than the hot window (minus the future skew: a
  redelivery carries the event's time, so its first acceptance was at most that
  long ago) may have lost its marker: code k, the caller searches the log. A
  marker miss means no acceptance within the hot window: the event is new. A
  marker hit is confirmed by the pending events (d), else code k (the original
  was flushed, or the digest collided: the log decides). Nothing is ever called
  a duplicate on a digest alone.
* Confirmed call: the caller found none of these events in the log after
  reading the flush sequence ARGV[5]. If a flush began or ended since (the
  sequence moved), every event answers r (look again); else an event in the
  pending events is a duplicate and any other is new.

An accepted event's record is stored in the pending events as
"<quantity>:<target>\t<record JSON>\t<field>=<micros>,..." (what it was
counted on); the flush writes it to the log with the counts.

Threshold crossings: when a PRE_PAID period's consumption goes from below 80%
(or 100%) of its limit to at or above it, the field "n:<ent>:<period>:<pct>" of
the pending hash is set (HSETNX) to "<now>:<consumed>", consumed being the highest
the batch carried the counter. A batch is judged from its counter before it to
that highest point, so a LATEST level that rose past a threshold and fell back
within one batch notifies as it would have in two. The flush moves the field to
the database with the counts, where it becomes a notification (once: its id is
the primary key, so a level that falls and rises again in a period notifies
once), and a redelivered event is a duplicate that moves nothing.

A reservation's record starts with "<quantity>:<target>": the same idempotency
key asked again with other parameters is a conflict (code c), not a duplicate.

Which entitlement, which period (meterd.lifecycle.status_at and period_at in
Python are the same rules): an entitlement takes usage timed at ts when
starts <= ts < usable until ("u": the end of grace or of the term, or the
termination; -1 open) and ts lies in none of its suspensions ("x"); the
period is the stored one containing ts, else for a renewing entitlement ("r")
the term of the calendar containing ts (starting where the stored periods
end, if that is later), else the last stored one (grace).

Returns one character per event (ScriptCode in storage/counters.py):
  a  accepted
  d  duplicate
  l  late
  s  suspended
  n  no entitlement
  m  missing resolution data: nothing was written for the event; the caller
     loads the data and counts the event again
  x  no room (strict only): nothing was counted and no marker written, so a
     retry is judged afresh
  c  conflict (strict only): the idempotency key was granted for other parameters
  k  confirm: the event may have been accepted before; nothing was written, the
     caller searches the event log and makes a confirmed call
  r  retry (confirmed call): a flush began or ended since the caller's search
  b  backpressure: too many events wait for a flush; nothing was written
  o  out of range: counting it would carry a counter past what it holds exactly
     (2^53 - 1 units of its scale); nothing was written

The event stats hash (KEYS[3]) counts every final outcome of a usage batch in
the same atomic step as the counts, so metrics never disagree with the
database, whatever dies afterwards.

Strict mode (the synchronous reserve call): an event is counted only if the
room its PRE_PAID entitlements have left covers it whole (unlimited and
PAY_PER_USE entitlements have unbounded room); it never creates overage.

Cost: Redis spends its time per redis.call, so each event costs one
SISMEMBER per live marker generation, one SADD and one HSET (its record) when
accepted; resolution data is
read and decoded once per customer and feature; and the counters are summed
in Lua and written once per touched field at the end of the batch. A counter is
read (HGET) once a batch where the burn-down or a level needs its value; the
last candidate of a sum is read only near the exact bound. A LATEST event reads
each candidate period's latest sample once a batch; they are written once at its
end. A UNIQUE_COUNT event costs a SISMEMBER per candidate, and a new value an
SADD and an expiry per candidate. Dimension filters decode the event's record
once, only for events reaching an entitlement with filters.

Burn-down: the resolution data lists the customer's entitlements for the
feature already in order (priority, soonest end, oldest). The candidates of an
event are the usable ones at its time, each with the period containing that time.
* SUM, COUNT, UNIQUE_COUNT (a new value is one unit): each candidate takes what
  room it has left; what is left after the last one is counted on the last one,
  where it shows as overage. A counted value goes into the set of every
  candidate's period; a value in any of them counts nothing.
* MAX, LATEST: the sample is a level shared down its candidates (each takes up
  to its limit, the last the rest), and each candidate's period judges its own
  share: MAX keeps the largest share any sample gave it, LATEST its share of the
  latest sample (time, then event key) it took. So a period's figure is a
  function of the events and the grants, never of arrival order or batching.
All numbers stay below 2^53, so Lua's doubles hold them exactly: an event is
refused (o) only if a counter it would move would pass that bound.
]]

local pending_key = KEYS[1]
local pending_since_key = KEYS[2]
local stats_key = KEYS[3]
local events_key = KEYS[4]
local batch_events_key = KEYS[5]
local flush_seq_key = KEYS[6]
local generations_key = KEYS[7]
local now_us = tonumber(ARGV[1])
local late_window_us = tonumber(ARGV[2])
local hot_us = tonumber(ARGV[3])
local strict = ARGV[4] == "1"
local confirmed = ARGV[5] ~= ""
local generation_us = tonumber(ARGV[6])
local marker_prefix = ARGV[7]
local skew_us = tonumber(ARGV[8])
local max_waiting = tonumber(ARGV[9])
local big_key = KEYS[8]
local n_events = (#KEYS - 8) / 2
local EVENT_ARGS = 8
-- The most units a counter holds exactly (Lua numbers are doubles), at any scale.
local MAX_UNITS = 9007199254740991
-- A running total above BIG is listed in big_key (by the HINCRBY that passes it, or
-- by the loader that seeds it): one not listed is at most BIG, so a count that adds
-- at most MAX_UNITS - BIG to it needs no read to stay exact.
local BIG = 4503599627370496 -- 2^52
local big = nil

local function is_big(field)
  if big == nil then
    big = {}
    for _, f in ipairs(redis.call("SMEMBERS", big_key)) do big[f] = true end
  end
  return big[field] == true
end
local decoded = {}
local out = {}
-- used_key -> field -> { base value read from Redis (or false), delta of this batch }
local used = {}
local pending = {}
-- field -> limit of a PRE_PAID period (for threshold crossings)
local prepaid_limits = {}
local THRESHOLDS = { 80, 100 }
-- "<field>=<micros>" of the event being counted (its record's last part)
local allocation = {}

local function int_str(n)
  return string.format("%.0f", n)
end

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

-- The table under key in t, created empty the first time.
local function table_at(t, key)
  local inner = t[key]
  if inner == nil then
    inner = {}
    t[key] = inner
  end
  return inner
end

local function used_entry(used_key, field)
  local fields = table_at(used, used_key)
  local entry = fields[field]
  if entry == nil then
    entry = { false, 0, 0 }
    fields[field] = entry
  end
  return entry
end

local function used_value(used_key, field)
  local entry = used_entry(used_key, field)
  if entry[1] == false then
    entry[1] = tonumber(redis.call("HGET", used_key, field) or "0")
  end
  return entry[1] + entry[2]
end

-- Calendar arithmetic on epoch microseconds (meterd/terms.py in Lua): days since
-- the epoch <-> (year, month, day), proleptic Gregorian (H. Hinnant's algorithms).
-- Instants before 1970 are negative: only OPEN (-1) means "no end".
local DAY_US = 86400000000
local OPEN = -1

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function days_in_month(y, m)
  if m == 2 then
    if (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 then return 29 end
    return 28
  end
  if m == 4 or m == 6 or m == 9 or m == 11 then return 30 end
  return 31
end

-- (days since the epoch, microseconds of the day) plus whole calendar months, the
-- day clamped to the month's length, in epoch microseconds
local function add_months_to_day(days, time_of_day, months)
  local y, m, d = civil_from_days(days)
  local index = m - 1 + months
  local ny, nm = y + math.floor(index / 12), index % 12 + 1
  local last = days_in_month(ny, nm)
  if d > last then d = last end
  return days_from_civil(ny, nm, d) * DAY_US + time_of_day
end

-- anchor (epoch microseconds, exact only from 1685 to 2255) plus whole months
local function add_months(anchor, months)
  local days = math.floor(anchor / DAY_US)
  return add_months_to_day(days, anchor - days * DAY_US, months)
end

-- r = { "m", months, anchor, limit, anchor day, anchor time of day }
--  or { "d", duration us, anchor, limit }. The anchor of a monthly term is also
-- whole days and microseconds (exact in a double however old it is; entries
-- written before they were there lack them); that of a term of days is a boundary
-- near the present (storage/resolution.py), so anchor + k terms is exact.
local function anchor_day(r)
  if r[5] ~= nil then return r[5], r[6] end
  local days = math.floor(r[3] / DAY_US)
  return days, r[3] - days * DAY_US
end

local function term_start(r, k)
  if r[1] == "m" then
    local days, time_of_day = anchor_day(r)
    return add_months_to_day(days, time_of_day, k * r[2])
  end
  return r[3] + k * r[2]
end

-- the k with term_start(k) <= ts < term_start(k + 1): a constant number of steps,
-- however many terms lie between the anchor and ts
local function term_index(r, ts)
  local k
  if r[1] == "m" then
    local ay, am = civil_from_days((anchor_day(r)))
    local ty, tm = civil_from_days(math.floor(ts / DAY_US))
    k = math.floor(((ty - ay) * 12 + tm - am) / r[2])
  else
    k = math.floor((ts - r[3]) / r[2])
  end
  while term_start(r, k) > ts do k = k - 1 end
  while term_start(r, k + 1) <= ts do k = k + 1 end
  return k
end

-- The hash field, limit and whether PRE_PAID of the period of e containing ts, and
-- until when that period can take usage (-1: open): its end, or for the last stored
-- period of an entitlement that does not renew, the end of its usable window (grace).
local function period_of(e, ts, month)
  if e.b == "U" then
    return e.i .. ":" .. month, e.q, false, add_months(tonumber(month), 1)
  end
  local latest, last = nil, nil
  for _, p in ipairs(e.p) do
    if p[1] <= ts and (latest == nil or p[1] > latest[1]) then latest = p end
    if last == nil or p[1] > last[1] then last = p end
  end
  local r = e.r
  if latest ~= nil and (latest[2] == OPEN or ts < latest[2]) then
    local keep = latest[2]
    if r == nil and latest == last and keep ~= OPEN then
      keep = e.u == OPEN and OPEN or math.max(keep, e.u)
    end
    return latest[4], latest[3], true, keep
  end
  if r ~= nil and ts >= e.s then
    local k = term_index(r, ts)
    local start = term_start(r, k)
    if latest ~= nil and latest[2] > start then start = latest[2] end
    return e.i .. ":" .. int_str(start), r[4], true, term_start(r, k + 1)
  end
  if latest ~= nil then -- in grace: the last period
    return latest[4], latest[3], true, e.u == OPEN and OPEN or math.max(latest[2], e.u)
  end
  return nil, nil, false, nil
end

local function suspended_at(e, ts)
  if e.x == nil then return false end
  for _, span in ipairs(e.x) do
    if span[1] <= ts and (span[2] == OPEN or ts < span[2]) then return true end
  end
  return false
end

local function room_of(used_key, c)
  if c[2] < 0 or not c[3] then return nil end -- unlimited, or pay-per-use
  local room = c[2] - used_value(used_key, c[1])
  if room < 0 then room = 0 end
  return room
end

local function add_to(used_key, field, delta)
  if delta == 0 then return end
  local entry = used_entry(used_key, field)
  entry[2] = entry[2] + delta
  -- the highest this batch carried the counter (a LATEST level may fall again):
  -- threshold crossings are judged on it, so they never depend on the batching
  if entry[2] > entry[3] then entry[3] = entry[2] end
  pending[field] = (pending[field] or 0) + delta
  allocation[#allocation + 1] = field .. "=" .. int_str(delta)
end

-- SUM: burn qty down the candidates (what exceeds every limit lands on the last):
-- the units each candidate would take (moves[j]), and what no room took (strict).
local function plan_sum(used_key, cands, qty, moves)
  local left = qty
  for j, c in ipairs(cands) do
    if left <= 0 then break end
    local take = left
    if strict then
      local room = room_of(used_key, c)
      if room ~= nil and room < take then take = room end
    elseif j < #cands and c[2] >= 0 then
      local room = c[2] - used_value(used_key, c[1])
      if room < 0 then room = 0 end
      if room < take then take = room end
    end
    if take > 0 then
      moves[j] = take
      left = left - take
    end
  end
  return left
end

-- MAX and LATEST: a sample's value is a level, shared down the candidates live at
-- its time like a sum (each takes up to its limit, the last the rest). Each
-- candidate's period judges the sample on its own share: MAX keeps the largest
-- share any sample gave it, LATEST its share of the latest sample it took (by
-- event time, ties by event key). A period's figure is then a function of the
-- events and the grants, never of their order of arrival or of the batching.
local function level_share(cands, j, level)
  local left = level
  for k = 1, j - 1 do
    local limit = cands[k][2]
    if limit < 0 or limit >= left then return 0 end -- unlimited, or room for it all
    left = left - limit
  end
  local limit = cands[j][2]
  if j < #cands and limit >= 0 and limit < left then return limit end
  return left
end

-- LATEST: the latest sample each period took, { ts, event key } or false, read
-- once a batch ("t:<field>" in the used hash: "<ts>\t<key>") and written at its end.
local latest = {}
local function latest_of(used_key, field)
  local fields = table_at(latest, used_key)
  local seen = fields[field]
  if seen == nil then
    seen = false
    local text = redis.call("HGET", used_key, "t:" .. field)
    if text then
      local tab = string.find(text, "\t", 1, true)
      seen = { tonumber(string.sub(text, 1, tab - 1)), string.sub(text, tab + 1) }
    end
    fields[field] = seen
  end
  return seen
end

-- UNIQUE_COUNT: the set of values counted in one period, kept until the period
-- (and late events into it) can no longer take usage.
local function unique_key(used_key, field)
  return used_key .. ":u:" .. field
end

local function seen_value(used_key, cands, value)
  for _, c in ipairs(cands) do
    if redis.call("SISMEMBER", unique_key(used_key, c[1]), value) == 1 then return true end
  end
  return false
end

-- The literal text of the value at data path segs in a record (JSON as
-- event_records.record_json writes it: no spaces, object keys unique), or nil.
local function skip_string(text, pos)
  local p = pos + 1
  while true do
    local q = string.find(text, '["\\]', p)
    if string.byte(text, q) == 92 then p = q + 2 else return q + 1 end
  end
end

local function skip_value(text, pos)
  local b = string.byte(text, pos)
  if b == 34 then return skip_string(text, pos) end
  if b == 123 or b == 91 then
    local depth, p = 0, pos
    while true do
      local q = string.find(text, '[][{}"]', p)
      b = string.byte(text, q)
      if b == 34 then
        p = skip_string(text, q)
      else
        depth = depth + ((b == 123 or b == 91) and 1 or -1)
        p = q + 1
        if depth == 0 then return p end
      end
    end
  end
  return (string.find(text, "[,}%]]", pos))
end

local function literal_at(text, pos, segs, i)
  if string.byte(text, pos) ~= 123 or string.byte(text, pos + 1) == 125 then return nil end
  local p = pos + 1
  while true do
    local after = skip_string(text, p)
    local value_pos = after + 1 -- past the colon
    if string.sub(text, p + 1, after - 2) == segs[i] then
      if i == #segs then
        return string.sub(text, value_pos, skip_value(text, value_pos) - 1)
      end
      return literal_at(text, value_pos, segs, i + 1)
    end
    p = skip_value(text, value_pos)
    if string.byte(text, p) ~= 44 then return nil end
    p = p + 1
  end
end

-- Dimensions: an entitlement with filters ("f": path -> value) takes only usage
-- whose event data has those values (meterd.meters.matches): JSON scalars of the
-- same kind, so a number matches only if the event wrote an integer (cjson reads
-- 2.0 as 2: the record's text tells them apart, read only when a number matches).
local data_of = {}
local function dims_match(e, i, record)
  if e.f == nil then return true end
  local data = data_of[i]
  if data == nil then
    -- floats: whether the record holds one anywhere (nil: not looked yet);
    -- integer: path -> whether the number there was written as an integer
    data = { d = cjson.decode(record).d, floats = nil, integer = {} }
    data_of[i] = data
  end
  for path, wanted in pairs(e.f) do
    local v = data.d
    for segment in string.gmatch(path, "[^.]+") do
      if type(v) ~= "table" then v = nil break end
      v = v[segment]
    end
    if v == nil or type(v) ~= type(wanted) or v ~= wanted then return false end
    if type(v) == "number" then
      if data.floats == nil then data.floats = string.find(record, "%d[.eE]") ~= nil end
      local integer = not data.floats or data.integer[path]
      if integer == nil then
        local segs = { "d" }
        for segment in string.gmatch(path, "[^.]+") do segs[#segs + 1] = segment end
        local literal = literal_at(record, 1, segs, 1)
        integer = literal ~= nil and string.find(literal, "[.eE]") == nil
        data.integer[path] = integer
      end
      if not integer then return false end
    end
  end
  return true
end

-- The outcome of one event judged new (not a duplicate, not late). ev: the event's
-- ts, month, qty, target, key, agg, value, record and index (one table, reused).
local function resolve(resolution_key, used_key, ev)
  local res = decoded[resolution_key]
  if res == nil then
    local raw = redis.call("GET", resolution_key)
    if not raw then
      return "m"
    end
    res = cjson.decode(raw)
    decoded[resolution_key] = res
  end
  local ts, qty = ev.ts, ev.qty
  local cands = {}
  local agg = ev.agg
  local keeps = agg == "U" and {} or nil
  local suspended = false
  for _, e in ipairs(res) do
    if (ev.target == "" or e.i == ev.target) and e.s <= ts and (e.u == OPEN or ts < e.u)
      and dims_match(e, ev.index, ev.record) then
      if suspended_at(e, ts) then
        suspended = true
      else
        local field, limit, prepaid, keep = period_of(e, ts, ev.month)
        if field ~= nil then
          cands[#cands + 1] = { field, limit, prepaid }
          if keeps then keeps[#cands] = keep end
          if prepaid and limit > 0 then prepaid_limits[field] = limit end
        end
      end
    end
  end
  if #cands == 0 then
    return suspended and "s" or "n"
  end
  allocation = {}
  -- moves[j]: what candidate j's counter moves by; nothing is written before the
  -- checks below pass
  local moves = {}
  local later = nil
  local left = 0
  local counted = false
  if agg == "S" or (agg == "U" and not seen_value(used_key, cands, ev.value)) then
    counted = true
    left = plan_sum(used_key, cands, qty, moves)
  elseif agg == "M" then
    for j, c in ipairs(cands) do
      local delta = level_share(cands, j, qty) - used_value(used_key, c[1])
      if delta > 0 then moves[j] = delta end
    end
  elseif agg == "L" then
    later = {}
    for j, c in ipairs(cands) do
      local seen = latest_of(used_key, c[1])
      if not seen or ts > seen[1] or (ts == seen[1] and ev.key > seen[2]) then
        later[j] = true
        moves[j] = level_share(cands, j, qty) - used_value(used_key, c[1])
      end
    end
  end
  -- Exact bound: no counter may pass what a double holds exactly (nor the database).
  -- Only the units that move count: a counter not read yet and not listed as big is
  -- at most BIG, so a small move needs no read.
  for j, c in ipairs(cands) do
    local delta = moves[j]
    if delta ~= nil and delta > 0 then
      local entry = used_entry(used_key, c[1])
      if entry[1] ~= false or entry[2] + delta > MAX_UNITS - BIG or is_big(c[1]) then
        if used_value(used_key, c[1]) + delta > MAX_UNITS then return "o" end
      end
    end
  end
  if strict and left > 0 then
    return "x"
  end
  for j, c in ipairs(cands) do
    if moves[j] ~= nil then add_to(used_key, c[1], moves[j]) end
  end
  if later ~= nil then
    local fields = latest[used_key]
    for j in pairs(later) do
      fields[cands[j][1]] = { ts, ev.key, true }
    end
  elseif agg == "U" and counted then
    -- a counted value belongs to the period of every candidate (so no grant's period
    -- ever counts it twice), each set kept until its period takes no more usage
    for j, c in ipairs(cands) do
      local key = unique_key(used_key, c[1])
      redis.call("SADD", key, ev.value)
      if keeps[j] == OPEN then
        redis.call("PERSIST", key)
      else
        redis.call("PEXPIREAT", key, int_str(math.floor((keeps[j] + late_window_us + DAY_US) / 1000)))
      end
    end
  end
  if #allocation == 0 then
    -- accepted without moving a counter (a value seen, a level not passed, an
    -- older LATEST, a zero): the log still keeps it, on the first candidate
    allocation[1] = cands[1][1] .. "=0"
  end
  return "a"
end

local outcomes = {}
local OUTCOME_NAMES = { a = "accepted", d = "duplicate", l = "late", s = "suspended",
  n = "no_entitlement" }

local function all(code)
  return string.rep(code, n_events)
end

if confirmed and (redis.call("GET", flush_seq_key) or "0") ~= ARGV[5] then
  return all("r")
end
if redis.call("HLEN", events_key) + redis.call("HLEN", batch_events_key) >= max_waiting then
  return all("b")
end
expire_generations(64)

-- d or c for an event whose record waits for a flush; nil if none does.
local function waiting(event_key, signature)
  local record = redis.call("HGET", events_key, event_key)
    or redis.call("HGET", batch_events_key, event_key)
  if not record then return nil end
  if strict and string.sub(record, 1, #signature + 1) ~= signature .. "\t" then
    return "c"
  end
  return "d"
end

local ev = {}
for i = 1, n_events do
  local base = EVENT_ARGS * i + 1
  local ts = tonumber(ARGV[base + 1])
  local qty_text, target = ARGV[base + 3], ARGV[base + 4]
  local event_key, digest_text = ARGV[base + 5], ARGV[base + 6]
  local digest = tonumber(digest_text)
  local signature = qty_text .. ":" .. target
  local code
  if ts < now_us - late_window_us then
    code = "l"
  elseif confirmed then
    code = waiting(event_key, signature)
  elseif ts < now_us - hot_us + skew_us then
    code = "k" -- its marker may be gone: the log decides
  elseif marker_hit(digest, digest_text) then
    code = waiting(event_key, signature) or "k"
  end
  if code == nil then
    local agg = ARGV[base + 8]
    ev.index, ev.ts, ev.month, ev.qty, ev.target = i, ts, ARGV[base + 2], tonumber(qty_text), target
    ev.key, ev.record = event_key, ARGV[base + 7]
    ev.agg, ev.value = string.sub(agg, 1, 1), string.sub(agg, 2)
    code = resolve(KEYS[2 * i + 7], KEYS[2 * i + 8], ev)
    if code == "a" then
      add_marker(digest, digest_text)
      redis.call("HSET", events_key, event_key,
        signature .. "\t" .. ev.record .. "\t" .. table.concat(allocation, ","))
    end
  end
  out[i] = code
  if not strict and OUTCOME_NAMES[code] ~= nil then
    outcomes[code] = (outcomes[code] or 0) + 1
  end
end
for code, n in pairs(outcomes) do
  redis.call("HINCRBY", stats_key, OUTCOME_NAMES[code], n)
end

-- A generation is kept while an acceptance in it is younger than the hot window;
-- its keys carry no TTL (expire_generations deletes them), its meta records where
-- its sets are.
for g, m in pairs(metas) do
  if m.added > 0 then
    redis.call("HSET", m.key, "L", int_str(m.L), "p", int_str(m.p), "n", int_str(m.n))
    redis.call("ZADD", generations_key, int_str(g), int_str(g))
  end
end

-- The smallest consumption that is at least pct% of limit, in exact integer steps
-- (limit * pct could pass 2^53).
local function threshold_point(limit, pct)
  if pct == 100 then return limit end
  local q = math.floor(limit / 100)
  local r = limit - 100 * q
  return pct * q + math.ceil(pct * r / 100)
end

-- before: the consumption before the batch; peak: the highest the batch carried it.
local function note_crossings(field, before, peak)
  local limit = prepaid_limits[field]
  if limit == nil then return end
  for _, pct in ipairs(THRESHOLDS) do
    local point = threshold_point(limit, pct)
    if before < point and peak >= point then
      redis.call("HSETNX", pending_key, "n:" .. field .. ":" .. pct, ARGV[1] .. ":" .. int_str(peak))
    end
  end
end

for used_key, fields in pairs(used) do
  for field, entry in pairs(fields) do
    if entry[2] ~= 0 then
      local after = tonumber(redis.call("HINCRBY", used_key, field, int_str(entry[2])))
      if after > BIG then redis.call("SADD", big_key, field) end
      local before = after - entry[2]
      note_crossings(field, before, before + entry[3])
    elseif entry[3] > 0 and prepaid_limits[field] ~= nil then
      -- a LATEST level that rose and fell back within the batch
      local before = used_value(used_key, field)
      note_crossings(field, before, before + entry[3])
    end
  end
end
for used_key, fields in pairs(latest) do
  local args = {}
  for field, seen in pairs(fields) do
    if seen and seen[3] then
      args[#args + 1] = "t:" .. field
      args[#args + 1] = int_str(seen[1]) .. "\t" .. seen[2]
    end
  end
  if #args > 0 then redis.call("HSET", used_key, unpack(args)) end
end
local wrote = false
for field, delta in pairs(pending) do
  if delta ~= 0 then
    redis.call("HINCRBY", pending_key, field, int_str(delta))
    wrote = true
  end
end
if wrote then
  -- The flush lag is measured from the first write a pending hash got.
  redis.call("SET", pending_since_key, ARGV[1], "NX")
end

return table.concat(out)
