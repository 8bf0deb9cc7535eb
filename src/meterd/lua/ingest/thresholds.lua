--[[ ingest/thresholds.lua: alert rules judged in the counting step. A rule's point
is a consumption in units of the period; the batch that carries the consumption
from below the point to at least it records the crossing in the pending hash
(field n:<ent>:<period>:<rule id>, HSETNX: once per period and rule; value
"<now us>:<peak units>", then ":<limit units>" when the period has a PRE_PAID
limit: the one the rule was judged against, with a rolled-over term's carry) for
the flush to notify.

A resolution entry carries its rules as "a", a list of { rule id, kind, threshold }
(storage/resolution.py); without "a" (an org without rules) the defaults apply:
80 % and 100 % of a PRE_PAID period's limit, whose ids "80" and "100" keep the
notification ids of before rules existed. Kinds: "P" PERCENT of the limit (the
threshold in 10^-4 %), "R" REMAINING at or below (limit - threshold units), "C"
CONSUMED at or above (threshold units, on any period, limited or not).

Needs (bound by the including script): pending_key; ARGV[1] (now).
Defines: prepaid_limits, field_rules, DEFAULT_RULES, percent_point, threshold_point,
watch_period, watched, rule_point, note_crossings.

Crossings with the default rules: when a PRE_PAID period's consumption goes from below 80%
(or 100%) of its limit to at or above it, the field "n:<ent>:<period>:<pct>" of
the pending hash is set (HSETNX) to "<now>:<consumed>[:<limit>]", consumed being the
highest the batch carried the counter, limit the PRE_PAID limit it was judged
against (a rolled-over term's with its carry). A batch is judged from its counter before it to
that highest point, so a LATEST level that rose past a threshold and fell back
within one batch notifies as it would have in two. The flush moves the field to
the database with the counts, where it becomes a notification (once: its id is
the primary key, so a level that falls and rises again in a period notifies
once), and a redelivered event is a duplicate that moves nothing.
]]

--- @include "ingest/util"

-- field -> limit of a PRE_PAID period (-1 or absent: none)
local prepaid_limits = {}
-- field -> the rules of its entitlement (absent: the defaults)
local field_rules = {}
-- 100 % in the units of a PERCENT threshold (10^-4 %)
local PERCENT_ONE = 1000000
local DEFAULT_RULES = { { "80", "P", 800000 }, { "100", "P", PERCENT_ONE } }

-- The smallest consumption that is at least p / PERCENT_ONE of limit, in exact
-- integer steps (limit * p could pass 2^53). The Python twin is
-- meterd.core.notifications.percent_point.
local function percent_point(limit, p)
  if p == PERCENT_ONE then return limit end
  local q = math.floor(limit / PERCENT_ONE)
  local r = limit - PERCENT_ONE * q
  -- the double quotient may round across a whole number
  if r < 0 then q, r = q - 1, r + PERCENT_ONE end
  if r >= PERCENT_ONE then q, r = q + 1, r - PERCENT_ONE end
  return p * q + math.ceil(p * r / PERCENT_ONE)
end

-- As before rules: the point of a whole percentage.
local function threshold_point(limit, pct)
  return percent_point(limit, pct * 10000)
end

-- Records what the crossings of a period are judged on: e its resolution entry
-- (its rules), limit and prepaid as period_of gives them.
local function watch_period(field, limit, prepaid, e)
  if prepaid and limit > 0 then prepaid_limits[field] = limit end
  if e.a ~= nil then field_rules[field] = e.a end
end

-- Whether a period has a rule to judge (a LATEST level that fell back is read again).
local function watched(field)
  local rules = field_rules[field]
  if rules == nil then return prepaid_limits[field] ~= nil end
  return #rules > 0
end

-- A rule's point in units of the period (nil: the rule does not apply to it).
local function rule_point(rule, limit)
  local kind, value = rule[2], rule[3]
  if kind == "C" then return value end
  if limit == nil or limit <= 0 then return nil end
  if kind == "P" then return percent_point(limit, value) end
  if kind == "R" then return limit - value end
  return nil
end

-- before: the consumption before the batch; peak: the highest the batch carried it.
local function note_crossings(field, before, peak)
  local rules = field_rules[field]
  local limit = prepaid_limits[field]
  if rules == nil then
    if limit == nil then return end
    rules = DEFAULT_RULES
  end
  local value = nil -- built at the first crossing: most batches cross nothing
  for _, rule in ipairs(rules) do
    local point = rule_point(rule, limit)
    if point ~= nil and point > 0 and before < point and peak >= point then
      if value == nil then
        value = ARGV[1] .. ":" .. int_str(peak)
        if limit ~= nil then value = value .. ":" .. int_str(limit) end
      end
      redis.call("HSETNX", pending_key, "n:" .. field .. ":" .. rule[1], value)
    end
  end
end
