--[[ ingest/resolve.lua: the outcome of one event judged new: its candidate
periods (entitlement, status, period, dimensions), the burn-down, the exact
bound, and the writes to the batch's caches.

Needs (bound by the including script): strict, late_window_us.
Defines: resolve.
]]

--- @include "ingest/util"
--- @include "ingest/calendar"
--- @include "ingest/status"
--- @include "ingest/periods"
--- @include "ingest/rollover"
--- @include "ingest/used"
--- @include "ingest/burn_down"
--- @include "ingest/dimensions"
--- @include "ingest/thresholds"

local decoded = {}
-- resolution key -> the entry's text as read (false: missing), once a call
local raws = {}
-- the entry of a given candidate: no rules, so the defaults apply (as without "a")
local NO_RULES = {}

-- The record (JSON) in ingest.lua's event line "<value>:<target>\t<record>\t".
local function line_record(line)
  return string.sub(line, string.find(line, "\t", 1, true) + 1, -2)
end

-- The outcome of one event judged new (not a duplicate, not late). ev: the event's
-- ts, month, qty, target, key, agg, value, index, hold (true: a hold, its units held
-- instead of consumed) and either record (its JSON) or line (ingest.lua's
-- "<value>:<target>\t<record>\t"); one table, reused. ev.given (ingest.lua only): nil,
-- or the worker's candidate for a SUM with the entry text it computed it from
-- ({ raw, cands }), taken only if the entry read now is that very text.
local function resolve(resolution_key, used_key, ev)
  local raw = raws[resolution_key]
  if raw == nil then
    raw = redis.call("GET", resolution_key)
    raws[resolution_key] = raw
  end
  if not raw then
    return "m"
  end
  local ts, qty = ev.ts, ev.qty
  local agg = ev.agg
  local given = ev.given
  local cands, keeps
  if given ~= nil and raw == given[1] then
    -- the worker read this very entry: its candidate is what the loop below gives
    cands = given[2]
    local c = cands[1]
    watch_period(c[1], c[2], c[3], NO_RULES)
  else
    local res = decoded[resolution_key]
    if res == nil then
      res = cjson.decode(raw)
      decoded[resolution_key] = res
    end
    cands = {}
    keeps = agg == "U" and {} or nil
    local suspended = false
    for _, e in ipairs(res) do
      if (ev.target == "" or e.i == ev.target) and in_window(e, ts)
        and (e.f == nil or dims_match(e, ev.index, ev.record or line_record(ev.line))) then
        if suspended_at(e, ts) then
          suspended = true
        else
          local field, limit, prepaid, keep
          if e.o == nil then
            field, limit, prepaid, keep = period_of(e, ts, ev.month)
          else -- the limit with what a renewed term carried over
            field, limit, prepaid, keep = rolled_limit(e, ts, ev.month, function(f)
              return used_value(used_key, f)
            end)
          end
          if field ~= nil then
            cands[#cands + 1] = { field, limit, prepaid }
            if keeps then keeps[#cands] = keep end
            watch_period(field, limit, prepaid, e)
          end
        end
      end
    end
    if #cands == 0 then
      return suspended and "s" or "n"
    end
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
    if moves[j] ~= nil then
      if ev.hold then
        -- a hold: the units are held, not consumed (never flushed)
        held_add(used_key, c[1], moves[j])
        allocation[#allocation + 1] = c[1] .. "=" .. int_str(moves[j])
      else
        add_to(used_key, c[1], moves[j])
      end
    end
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
  if agg ~= "S" then
    -- a level or unique period's version: a correction recounts the period from its
    -- events, and refuses if one was counted there since it read them
    for _, c in ipairs(cands) do redis.call("HINCRBY", used_key, "v:" .. c[1], 1) end
  end
  if #allocation == 0 then
    -- accepted without moving a counter (a value seen, a level not passed, an
    -- older LATEST, a zero): the log still keeps it, on the first candidate
    allocation[1] = cands[1][1] .. "=0"
  end
  return "a"
end
