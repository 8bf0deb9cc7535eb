--[[ ingest.lua: count one batch of validated usage events, atomically.

KEYS[1]                 pending hash: "<ent>:<period>" -> micro-units not yet flushed
KEYS[1 + 3i - 2]        dedupe marker of event i        (string, expires)
KEYS[1 + 3i - 1]        resolution data of event i      (string, JSON, see resolution.py)
KEYS[1 + 3i]            used hash of event i's customer "<ent>:<period>" -> micro-units
ARGV[6i - 5]            event time, epoch microseconds
ARGV[6i - 4]            start of the UTC month of the event time, epoch microseconds
ARGV[6i - 3]            quantity, integer micro-units (> 0)
ARGV[6i - 2]            target entitlement id (hex) or ""
ARGV[6i - 1]            "1" if the event is older than the late window, else "0"
ARGV[6i]                dedupe marker lifetime, milliseconds

Returns one character per event: a accepted, d duplicate, l late, s suspended,
n no entitlement, m resolution data missing (the caller loads it and retries
that event; nothing was written for it).

Burn-down: the resolution data lists the customer's entitlements for the
feature already in order (priority, soonest end, oldest). Each usable one
takes what room it has left in the period containing the event time; what is
left after the last one is counted on the last one, where it shows as overage.
All numbers stay below 2^53, so Lua's doubles hold them exactly.
]]

local pending_key = KEYS[1]
local n_events = (#KEYS - 1) / 3
local decoded = {}
local out = {}

local function int_str(n)
  return string.format("%.0f", n)
end

-- The hash field and limit of the period of entitlement e that contains ts.
local function period_of(e, ts, month)
  if e.b == "U" then
    return e.i .. ":" .. month, e.q
  end
  local last = nil
  for _, p in ipairs(e.p) do
    if p[1] <= ts and (p[2] < 0 or ts < p[2]) then
      return p[4], p[3]
    end
    last = p
  end
  -- In grace (past the end of the last period, before grace_until): the last period.
  if last ~= nil and last[2] >= 0 and ts >= last[2] then
    return last[4], last[3]
  end
  return nil, nil
end

local function count(used_key, cands, qty)
  local left = qty
  for j, c in ipairs(cands) do
    local take = left
    if j < #cands and c[2] >= 0 then
      local used = tonumber(redis.call("HGET", used_key, c[1]) or "0")
      local room = c[2] - used
      if room < 0 then room = 0 end
      if room < take then take = room end
    end
    if take > 0 then
      redis.call("HINCRBY", used_key, c[1], int_str(take))
      redis.call("HINCRBY", pending_key, c[1], int_str(take))
      left = left - take
    end
    if left <= 0 then break end
  end
end

for i = 1, n_events do
  local dedupe_key = KEYS[3 * i - 1]
  local resolution_key = KEYS[3 * i]
  local used_key = KEYS[3 * i + 1]
  local ts = tonumber(ARGV[6 * i - 5])
  local month = ARGV[6 * i - 4]
  local qty = tonumber(ARGV[6 * i - 3])
  local target = ARGV[6 * i - 2]
  local is_late = ARGV[6 * i - 1]
  local dedupe_ms = ARGV[6 * i]
  local code

  if redis.call("EXISTS", dedupe_key) == 1 then
    code = "d"
  elseif is_late == "1" then
    code = "l"
  else
    local res = decoded[resolution_key]
    if res == nil then
      local raw = redis.call("GET", resolution_key)
      if raw then
        res = cjson.decode(raw)
        decoded[resolution_key] = res
      end
    end
    if res == nil then
      code = "m"
    else
      local cands = {}
      local suspended = false
      for _, e in ipairs(res) do
        if (target == "" or e.i == target) and e.s <= ts and (e.u < 0 or ts < e.u) then
          if e.t == "S" then
            suspended = true
          else
            local field, limit = period_of(e, ts, month)
            if field ~= nil then cands[#cands + 1] = { field, limit } end
          end
        end
      end
      if #cands == 0 then
        code = suspended and "s" or "n"
      else
        count(used_key, cands, qty)
        redis.call("SET", dedupe_key, "1", "PX", dedupe_ms)
        code = "a"
      end
    end
  end
  out[i] = code
end

return table.concat(out)
