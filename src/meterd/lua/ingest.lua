--[[ ingest.lua: count one batch of validated usage events, atomically.

KEYS[1]                 pending hash: "<ent>:<period>" -> micro-units not yet flushed
KEYS[2]                 pending since: when the pending hash got its first write (epoch us)
KEYS[3]                 event stats hash: outcome -> events (usage only, not reservations)
KEYS[4]                 pending events hash: event key -> record (the event log's rows to be)
KEYS[5]                 the same, renamed for the flush in flight
KEYS[6]                 flush sequence (bumped when a flush begins and when it ends)
KEYS[7]                 marker generations (sorted set: generation -> generation)
KEYS[8]                 big counters: the used fields above 2^52 units (a set)
KEYS[9]                 holds due: used key -> the earliest expiry of its live holds
KEYS[10…]               each key the events name once, in order of first use: the
                        resolution data of a customer and feature (string, JSON, see
                        resolution.py) and the used hash of a customer "<ent>:<period>"
                        -> units, and "t:<ent>:<period>" -> "<ts>\t<event key>" of the
                        period's latest LATEST sample, "h:<ent>:<period>" -> units
                        held (ingest/holds); "<this key>:u:<ent>:<period>": the set of
                        the values a UNIQUE_COUNT period counted
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
ARGV[10]                the resolution entries the worker gives, each as it read it (the
                        raw text, once a call), joined by RS ("\30", which JSON text
                        never holds); "" none. Entry r is the r-th.
ARGV[11]                the candidates it gives, joined by RS; "" none. Candidate g, the
                        g-th, is "<r>\29<field>\29<limit>\29<1 | 0>": the period (its
                        used field and limit, PRE_PAID or not) the worker computed for
                        some events from entry r (storage/resolution_cache.py: one
                        entitlement, no filters, suspensions, rollover or rules, a SUM,
                        ts in a stored period or pay-per-use), taken only if the entry
                        the script reads is byte for byte entry r, else ignored
ARGV[i + 11]            event i: its fields joined by GS ("\29", which none of them
                        holds: storage/counters.py EVENT_FIELD_SEPARATOR), in order
                          the KEYS position of its resolution data
                          the KEYS position of its customer's used hash
                          event time, epoch microseconds
                          start of the UTC month of the event time, epoch microseconds
                          value, integer units of the feature's scale (10^-scale; >= 0)
                          target entitlement id (hex) or ""
                          event key "<org>:<len>:<source>:<id>" (the pending events field)
                          marker digest: an integer below 2^52, as decimal text
                          aggregation: "S" sum (and count), "M" max, "L" latest, or
                          "U" followed by the distinct value (JSON text) of a unique
                          count (meterd.core.domain.Aggregation)
                          hold operation (ingest/hold_ops): "" none, "H<hold key>\t<expiry
                          us>\t<most live>\t<meta>" hold the units, "S<hold key>" settle it
                          given candidate: "" none, else its g (above)
                          "<value>:<target>\t<record>\t": the start of the event's
                          pending record (below), its record (JSON) for the log

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

Threshold crossings: ingest/thresholds.lua. Burn-down: ingest/burn_down.lua.
Which entitlement, which period: ingest/periods.lua.

A reservation's record starts with "<quantity>:<target>": the same idempotency
key asked again with other parameters is a conflict (code c), not a duplicate.

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
  e  hold expired (settle only)
  f  hold released (settle only)
  g  hold missing (settle only): never made, or its record is gone
  t  too many holds (hold only): the customer keeps the most live holds it may

The event stats hash (KEYS[3]) counts every final outcome of a usage batch in
the same atomic step as the counts, so metrics never disagree with the
database, whatever dies afterwards.

Strict mode (the synchronous reserve call): an event is counted only if the
room its PRE_PAID entitlements have left covers it whole (unlimited and
PAY_PER_USE entitlements have unbounded room); it never creates overage.

Cost: Redis spends its time per redis.call, so each event costs one
SISMEMBER per live marker generation; the accepted events' records go in with one
HSET and their markers with one SADD per set, at the end of the call (a key
repeated within the call finds its first copy in this call's tables, as it would
find its marker and record); a new marker generation starts at its predecessor's
size, so it seldom splits; resolution data is
read once per customer and feature, and decoded only where an event was given no
candidate (ARGV[11]) or the entry is no longer the text the worker read
(the common event then costs a string comparison, not a decode and a period
search); and the counters are summed
in Lua and written once per touched field at the end of the batch. A counter is
read (HGET) once a batch where the burn-down or a level needs its value; the
last candidate of a sum is read only near the exact bound. A LATEST event reads
each candidate period's latest sample once a batch; they are written once at its
end. A UNIQUE_COUNT event costs a SISMEMBER per candidate, and a new value an
SADD and an expiry per candidate. Dimension filters decode the event's record
once, only for events reaching an entitlement with filters.

All numbers stay below 2^53, so Lua's doubles hold them exactly: an event is
refused (o) only if a counter it would move would pass that bound.

Assembled from fragments, one concern each (meterd/lua/__init__.py resolves the
"--- @include" lines below into this one atomic script):
  ingest/util        OPEN, int_str, table_at
  ingest/used        the used-totals cache of the batch, the exact bound's BIG
  ingest/holds       held units, hold expiry by time alone
  ingest/hold_ops    making and settling a hold (the hold record)
  ingest/markers     the marker linear hash (dedupe, first tier)
  ingest/thresholds  threshold crossings of PRE_PAID periods
  ingest/calendar    terms on epoch microseconds (meterd/core/terms.py's twin)
  ingest/status      whether an entitlement takes usage at ts (lifecycle's twin)
  ingest/periods     the period containing ts (lifecycle.period_at's twin)
  ingest/burn_down   how units are shared down the candidates
  ingest/dimensions  dimension filters (meters.matches' twin), a JSON literal scanner
  ingest/resolve     the outcome of one event judged new
  ingest/write_counts  the end of the call: totals, latest samples, pending deltas
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
local holds_due_key = KEYS[9]
local n_events = #ARGV - 11
-- an event's fields, split once
local EVENT_FIELDS = "^([^\29]*)\29([^\29]*)\29([^\29]*)\29([^\29]*)\29([^\29]*)\29"
  .. "([^\29]*)\29([^\29]*)\29([^\29]*)\29([^\29]*)\29([^\29]*)\29([^\29]*)\29(.*)$"
-- the given candidates: g -> { raw entry text, { { field, limit, prepaid } } }
local given = {}
if ARGV[11] ~= "" then
  local raws, text, from = {}, ARGV[10], 1
  while true do
    local stop = string.find(text, "\30", from, true)
    raws[#raws + 1] = string.sub(text, from, (stop or 0) - 1)
    if stop == nil then break end
    from = stop + 1
  end
  for r, field, limit, prepaid in string.gmatch(ARGV[11],
    "(%d+)\29([^\29\30]*)\29([^\29\30]*)\29([01])") do
    given[#given + 1] = { raws[tonumber(r)], { { field, tonumber(limit), prepaid == "1" } } }
  end
end

--- @include "ingest/used"
--- @include "ingest/markers"
--- @include "ingest/thresholds"
--- @include "ingest/resolve"
--- @include "ingest/hold_ops"
--- @include "ingest/write_counts"

local out = {}

local outcomes = {}
local OUTCOME_NAMES = { a = "accepted", d = "duplicate", l = "late", s = "suspended",
  n = "no_entitlement" }

if confirmed and (redis.call("GET", flush_seq_key) or "0") ~= ARGV[5] then
  return string.rep("r", n_events)
end
if redis.call("HLEN", events_key) + redis.call("HLEN", batch_events_key) >= max_waiting then
  return string.rep("b", n_events)
end
expire_generations(64)

-- This call's records, written once at its end: event key -> record, and the
-- HSET arguments (field, value, ...) in order.
local new_records = {}
local new_record_args = {}

-- d or c for an event whose record waits for a flush (or was accepted earlier in
-- this call); nil if none does.
local function waiting(event_key, qty_text, target)
  local record = new_records[event_key]
    or redis.call("HGET", events_key, event_key)
    or redis.call("HGET", batch_events_key, event_key)
  if not record then return nil end
  if strict then
    local signature = qty_text .. ":" .. target
    if string.sub(record, 1, #signature + 1) ~= signature .. "\t" then return "c" end
  end
  return "d"
end

local ev = {}
for i = 1, n_events do
  local res_at, used_at, ts_text, month, qty_text, target, event_key, digest_text, agg, op,
    given_at, line = string.match(ARGV[i + 11], EVENT_FIELDS)
  local ts = tonumber(ts_text)
  local kind, hold_key, signature = "", nil, nil
  if op ~= "" then
    kind, hold_key = hold_op(op)
    signature = qty_text .. ":" .. target
  end
  local digest = tonumber(digest_text)
  local used_key = KEYS[tonumber(used_at)]
  local code, hold_allocation
  if kind ~= "" then
    code, hold_allocation = hold_first_look(op, kind, hold_key, used_key, signature, qty_text)
  elseif ts < now_us - late_window_us then
    code = "l"
  elseif confirmed then
    code = waiting(event_key, qty_text, target)
  elseif ts < now_us - hot_us + skew_us then
    code = "k" -- its marker may be gone: the log decides
  elseif marker_hit(digest, digest_text) then
    code = waiting(event_key, qty_text, target) or "k"
  end
  if code == nil then
    ev.index, ev.ts, ev.month, ev.qty, ev.target = i, ts, month, tonumber(qty_text), target
    ev.key, ev.line, ev.hold = event_key, line, kind == "H"
    ev.agg, ev.value = string.sub(agg, 1, 1), string.sub(agg, 2)
    -- a candidate is for a SUM that is no hold operation (resolve checks the entry)
    ev.given = nil
    if given_at ~= "" and kind == "" and agg == "S" then ev.given = given[tonumber(given_at)] end
    code = resolve(KEYS[tonumber(res_at)], used_key, ev)
    if code == "a" and kind == "H" then
      create_hold(hold_key, op, used_key, signature, ev.qty)
    elseif code == "a" then
      add_marker(digest, digest_text)
      local record = line .. table.concat(allocation, ",")
      new_records[event_key] = record
      new_record_args[#new_record_args + 1] = event_key
      new_record_args[#new_record_args + 1] = record
      if kind == "S" then mark_settled(hold_key, used_key, qty_text) end
    elseif kind == "S" then
      held_undo(used_key, hold_allocation) -- not counted (data missing): nothing changes
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

for from = 1, #new_record_args, 1000 do
  redis.call("HSET", events_key,
    unpack(new_record_args, from, math.min(from + 999, #new_record_args)))
end
write_markers()
save_generations()
write_held()

write_counts()

return table.concat(out)
