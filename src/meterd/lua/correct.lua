--[[ correct.lua: void or amend accepted events (their items), atomically.

KEYS[1]                 pending hash: "<ent>:<period>" -> micro-units not yet flushed
KEYS[2]                 pending since: when the pending hash got its first write (epoch us)
KEYS[3]                 pending events hash: event key -> record (the event log's rows to be)
KEYS[4]                 the same, renamed for the flush in flight
KEYS[5]                 flush sequence (bumped when a flush begins and when it ends)
KEYS[6]                 big counters: the used fields above 2^52 units (a set)
KEYS[7]                 used hash of the event's customer "<ent>:<period>" -> units
KEYS[8]                 holds due (ingest/holds.lua: an amend's burn-down sees held units)
KEYS[i + 8]             resolution data of item i's feature (string, JSON)
ARGV[1]                 now, epoch microseconds
ARGV[2]                 the flush sequence the caller read before it read the event's
                        records (waiting and logged)
ARGV[3]                 late window, microseconds
ARGV[9i - 5]            item i's correction key "<event key>" U+001E "<n>" (the pending
                        events field of the correction; n counts the item's corrections)
ARGV[9i - 4]            item i's correction signature "<quantity>:<target>" and record
                        (JSON, the audit in its data) "<signature>\t<record JSON>"
ARGV[9i - 3]            what item i counts now, to take back: "<field>=<units>=<flushed>"
                        comma-separated (flushed: the field's units in SQL, to seed a
                        running total no longer kept)
ARGV[9i - 2]            "V" void, "A" amend, "P" a MAX, LATEST or UNIQUE_COUNT item's
                        recount (services/level_corrections.py): ARGV[9i - 1] is its
                        plan, and what it counts now is not taken back as a sum
ARGV[9i - 1]            amend: the event time, epoch microseconds; plan: JSON (below)
ARGV[9i]                amend: start of the UTC month of the event time, epoch microseconds
ARGV[9i + 1]            amend: the new value, integer units of the feature's scale
ARGV[9i + 2]            amend: target entitlement id (hex) or ""
ARGV[9i + 3]            amend: the item's record JSON with its new data (for dimension
                        filters; ingest.lua's record)

A correction is a compensating entry: its units are taken back from (and, for an
amend, counted again through the burn-down at the event's time onto) the used
totals and the pending hash, and its record waits in the pending events hash under
its own key, so the flush writes it to the event log with the counts (a SUM or
COUNT item's units by difference; a MAX, LATEST or UNIQUE_COUNT item's periods by a
recount, "P"). Exactly once: the call refuses
if a flush began or ended since the caller read the records (r), or if one of the
correction keys already waits (d: a racing correction took that number; the caller
reads again). A correction already flushed is in the log, which the caller read
under the same flush sequence.

A plan (JSON; units as decimal text) recounts level periods:
  f       a field for the record's row when nothing moves
  rs      the resolution data the plan was computed on (another: r)
  v       [ [field, version] ]: each level period's version when its events were read
          (the script bumps it for every item it counts there; moved: r); bumped
          again here, so racing level corrections of one period read again
  set     MAX/LATEST: [ [field, units, flushed, PRE_PAID limit or -1, latest sample
          "<ts>\t<event key>" or ""] ]: the period's recounted figure (latest: its t:
          field, when "latest" is true)
  rc      UNIQUE_COUNT: [ [key, "<signature>\t<record JSON>"] ] the recount records of
          the other items carrying the value (each a correction of its own item: a
          key already waiting is a racing correction, d)
  tb      UNIQUE_COUNT: [ [record key or "" (this item's record), [ [field, units,
          flushed] ] ] ] each carrier's units of the value, taken back in its record
  srem    UNIQUE_COUNT: [value, [fields] ] the periods whose sets lose the value
  rep     UNIQUE_COUNT: [ [ts, month, units, target, event key, record, value, record
          key or ""] ] the live items carrying a value, counted again through the
          burn-down in order, each into its own record

Returns one character for the whole call:
  a  applied
  r  retry: the flush sequence moved
  d  taken: a correction key already waits
  m  missing resolution data of an item's feature: nothing written; load it, retry
  n  amend: no entitlement takes the new value at the event time
  s  amend: suspended at the event time
  o  amend: the new value would carry a counter past what it holds exactly
]]

local pending_key = KEYS[1]
local pending_since_key = KEYS[2]
local events_key = KEYS[3]
local batch_events_key = KEYS[4]
local flush_seq_key = KEYS[5]
local big_key = KEYS[6]
local used_key = KEYS[7]
local holds_due_key = KEYS[8]
local now_us = tonumber(ARGV[1])
local late_window_us = tonumber(ARGV[3])
local strict = false
local n_items = #KEYS - 8
local ITEM_ARGS = 9

--- @include "ingest/used"
--- @include "ingest/thresholds"
--- @include "ingest/resolve"
--- @include "ingest/write_counts"

if (redis.call("GET", flush_seq_key) or "0") ~= ARGV[2] then
  return "r"
end
local plans = {}
for i = 1, n_items do
  local key = ARGV[ITEM_ARGS * i - 5]
  if redis.call("HEXISTS", events_key, key) == 1
    or redis.call("HEXISTS", batch_events_key, key) == 1 then
    return "d"
  end
  local resolution = redis.call("GET", KEYS[i + 8])
  if not resolution then
    return "m"
  end
  if ARGV[ITEM_ARGS * i - 2] == "P" then
    local plan = cjson.decode(ARGV[ITEM_ARGS * i - 1])
    if plan.rs ~= resolution then return "r" end
    for _, v in ipairs(plan.v) do
      if (redis.call("HGET", used_key, "v:" .. v[1]) or "0") ~= v[2] then return "r" end
    end
    for _, rc in ipairs(plan.rc or {}) do
      if redis.call("HEXISTS", events_key, rc[1]) == 1
        or redis.call("HEXISTS", batch_events_key, rc[1]) == 1 then
        return "d"
      end
    end
    plans[i] = plan
  end
end

-- A period no cached resolution data holds: seed its total from SQL so the
-- invariant holds (a field with pending units has a used entry).
local function seed(field, flushed)
  if redis.call("HEXISTS", used_key, field) == 0 then
    redis.call("HSET", used_key, field, flushed)
  end
end

local function moved(entries, field, delta)
  if delta ~= 0 then
    add_to(used_key, field, delta)
    entries[#entries + 1] = field .. "=" .. int_str(delta)
  end
end

-- The resolution entry of a period's entitlement (its alert rules), {} if none.
local function entry_of(resolution_key, field)
  local res = decoded[resolution_key]
  if res == nil then
    res = cjson.decode(redis.call("GET", resolution_key))
    decoded[resolution_key] = res
  end
  local id = string.match(field, "^([^:]+):")
  for _, e in ipairs(res) do
    if e.i == id then return e end
  end
  return {}
end

-- A level item's recount (see "A plan" above); nil, or the code of a refusal.
-- entries: this item's record's; recounts: record key -> entries of other items'.
local ev = {}
local recounts = {}
local function apply_plan(i, plan, entries)
  local function into(key)
    if key == "" then return entries end
    recounts[key] = recounts[key] or {}
    return recounts[key]
  end
  for _, s in ipairs(plan.set or {}) do
    local field, limit = s[1], tonumber(s[4])
    seed(field, s[3])
    watch_period(field, limit, limit > 0, entry_of(KEYS[i + 8], field))
    moved(entries, field, tonumber(s[2]) - used_value(used_key, field))
    if plan.latest and s[5] ~= "" then
      redis.call("HSET", used_key, "t:" .. field, s[5])
    elseif plan.latest then
      redis.call("HDEL", used_key, "t:" .. field)
    end
  end
  for _, tb in ipairs(plan.tb or {}) do
    for _, t in ipairs(tb[2]) do
      seed(t[1], t[3])
      moved(into(tb[1]), t[1], -tonumber(t[2]))
    end
  end
  if plan.srem ~= nil then
    for _, field in ipairs(plan.srem[2]) do
      redis.call("SREM", unique_key(used_key, field), plan.srem[1])
    end
  end
  for k, r in ipairs(plan.rep or {}) do
    ev.index, ev.ts, ev.month, ev.qty = 1000 * i + k, tonumber(r[1]), r[2], tonumber(r[3])
    ev.target, ev.key, ev.record, ev.agg, ev.value = r[4], r[5], r[6], "U", r[7]
    ev.hold = false
    local code = resolve(KEYS[i + 8], used_key, ev)
    if code == "a" then
      local target = into(r[8])
      for _, entry in ipairs(allocation) do target[#target + 1] = entry end
    elseif code ~= "n" and code ~= "s" then
      return code
    end
  end
  for _, v in ipairs(plan.v) do redis.call("HINCRBY", used_key, "v:" .. v[1], 1) end
  return nil
end

-- "<field>=<delta>" entries in order, summed per field (a field moved back and
-- forth by an amend is one row of the log); at least one entry.
local function merged(entries)
  local order, sums = {}, {}
  for _, entry in ipairs(entries) do
    local eq = string.find(entry, "=", 1, true)
    local field, units = string.sub(entry, 1, eq - 1), tonumber(string.sub(entry, eq + 1))
    if sums[field] == nil then
      order[#order + 1] = field
      sums[field] = 0
    end
    sums[field] = sums[field] + units
  end
  local out = {}
  for _, field in ipairs(order) do
    if sums[field] ~= 0 then out[#out + 1] = field .. "=" .. int_str(sums[field]) end
  end
  if #out == 0 then out[1] = order[1] .. "=0" end
  return table.concat(out, ",")
end

local records = {}
for i = 1, n_items do
  local base = ITEM_ARGS * i - 5
  allocation = {}
  local entries = {}
  for field, units, flushed in string.gmatch(ARGV[base + 2], "([^=,]+)=(-?%d+)=(-?%d+)") do
    seed(field, flushed)
    add_to(used_key, field, -tonumber(units))
    entries[#entries + 1] = field .. "=" .. int_str(-tonumber(units))
  end
  if plans[i] ~= nil then
    local code = apply_plan(i, plans[i], entries)
    if code ~= nil then return code end
  elseif ARGV[base + 3] == "A" then
    ev.index, ev.ts, ev.month = i, tonumber(ARGV[base + 4]), ARGV[base + 5]
    ev.qty, ev.target = tonumber(ARGV[base + 6]), ARGV[base + 7]
    ev.key, ev.record, ev.agg, ev.value = ARGV[base], ARGV[base + 8], "S", ""
    local code = resolve(KEYS[i + 8], used_key, ev)
    if code ~= "a" then
      return code -- only the seeds above were written: each is the SQL value
    end
    for _, entry in ipairs(allocation) do entries[#entries + 1] = entry end
  end
  if #entries == 0 then
    -- nothing counted to take back (an event the log kept on a zero): one row still
    -- records the correction
    entries[1] = (plans[i] and plans[i].f or string.match(ARGV[base + 2], "^([^=,]+)")) .. "=0"
  end
  records[i] = ARGV[base + 1] .. "\t" .. merged(entries)
end

write_counts()
for i = 1, n_items do
  redis.call("HSET", events_key, ARGV[ITEM_ARGS * i - 5], records[i])
  for _, rc in ipairs(plans[i] and plans[i].rc or {}) do
    if recounts[rc[1]] ~= nil and #recounts[rc[1]] > 0 then
      redis.call("HSET", events_key, rc[1], rc[2] .. "\t" .. merged(recounts[rc[1]]))
    end
  end
end
return "a"
