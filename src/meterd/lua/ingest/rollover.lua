--[[ ingest/rollover.lua: what a renewed PRE_PAID term carries from the term before
it, the Lua twin of meterd/core/rollover.py (tests/test_rollover_model.py holds the
two together). Pure: the caller reads the consumptions (the used hash) and passes them.

Figures are integer units of the feature's scale, -1 unlimited (as in the resolution
data). Held units are not consumed: callers pass the used value alone.

Defines: rollover_carried, rollover_term_limit, rollover_effective_limit.
]]

-- MIN(rollover_max, MAX(remaining, rollover_min)); an unlimited term before carries
-- rollover_max.
local function rollover_carried(limit_before, consumed_before, rmax, rmin)
  if limit_before < 0 then return rmax end
  local remaining = limit_before - consumed_before
  if remaining < rmin then remaining = rmin end
  if remaining > rmax then remaining = rmax end
  return remaining
end

local function rollover_term_limit(base, limit_before, consumed_before, rmax, rmin)
  if base < 0 then return -1 end
  return base + rollover_carried(limit_before, consumed_before, rmax, rmin)
end

-- The limit of the last term of a run whose first term's limit is final: consumed[i]
-- is the consumption of the run's term i, bases[i] the renewal quantity of term i + 1.
local function rollover_effective_limit(final_limit, consumed, bases, rmax, rmin)
  local limit = final_limit
  for i = 1, #bases do
    limit = rollover_term_limit(bases[i], limit, consumed[i], rmax, rmin)
  end
  return limit
end
