--[[ ingest/calendar.lua: calendar arithmetic on epoch microseconds, the Lua twin
of meterd/core/terms.py (tests/test_lua_calendar.py holds the two together). Pure.

Defines: DAY_US, civil_from_days, days_from_civil, days_in_month, add_months,
add_months_to_day, term_start, term_index.
]]

-- Days since the epoch <-> (year, month, day), proleptic Gregorian (H. Hinnant's
-- algorithms).
local DAY_US = 86400000000

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
