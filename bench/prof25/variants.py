"""The scripts the profile compares: the unmodified ingest script, its profiling
copies (phase timers, call counts) and one experiment each (a text change of the
assembled script, or a different encoding of its inputs).

Every variant is assembled by meterd's own loader (``meterd.lua.assemble``); the
profiling copy replaces three files by those under ``lua/prof`` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meterd.lua import assemble, read_fragment

HERE = Path(__file__).parent

# Phase timers and call counters, prepended to the profiling copies. Redis 7.0's Lua
# has no os.clock: TIME is the only clock (about 0.7 us a read from Lua, measured
# each call by 200 back-to-back phase switches, "calib", and subtracted per switch).
PRELUDE = """
local enter, rcall, prof_finish
do
  local real_call = redis.call
  local PROF_TIME, PROF_COUNT = %(time)s, %(count)s
  local T, N, CALLS = {}, {}, {}
  local phase = "setup"
  local function clock()
    local t = real_call("TIME")
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  local last = PROF_TIME and clock() or 0
  enter = function(p)
    if PROF_TIME then
      local t = clock()
      T[phase] = (T[phase] or 0) + (t - last)
      N[phase] = (N[phase] or 0) + 1
      last = t
    end
    phase = p
  end
  rcall = function(cmd, ...)
    if PROF_COUNT then
      local c = CALLS[phase]
      if c == nil then c = {} CALLS[phase] = c end
      c[cmd] = (c[cmd] or 0) + 1
    end
    return real_call(cmd, ...)
  end
  prof_finish = function()
    if PROF_TIME then
      enter("calib")
      for _ = 1, 200 do enter("calib") end
      enter("end")
    end
    local key = "prof25:t"
    for p, t in pairs(T) do
      real_call("HINCRBYFLOAT", key, "t:" .. p, t)
      real_call("HINCRBY", key, "n:" .. p, N[p])
    end
    for p, c in pairs(CALLS) do
      for cmd, n in pairs(c) do real_call("HINCRBY", key, "c:" .. p .. ":" .. cmd, n) end
    end
  end
end
"""


def _reader(override: Path | None) -> Callable[[str], str]:
    def read(name: str) -> str:
        if override is not None and (override / name).exists():
            return (override / name).read_text()
        return read_fragment(name)

    return read


def base_source() -> str:
    return assemble("ingest")


def prof_source(*, time: bool, count: bool) -> str:
    text = assemble("ingest", _reader(HERE / "lua" / "prof"))
    if count:
        text = text.replace("redis.call(", "rcall(")
    flags = {"time": "true" if time else "false", "count": "true" if count else "false"}
    return PRELUDE % flags + text


def _edit(text: str, old: str, new: str) -> str:
    n = text.count(old)
    if n != 1:
        raise AssertionError(f"{old!r} found {n} times")
    return text.replace(old, new)


@dataclass
class Variant:
    name: str
    what: str
    source: str
    #: "json" resolution entries as stored, or "msgpack" (re-encoded in Redis first)
    resolution: str = "json"
    #: "as_is" (add_batch's KEYS/ARGV), or "packed" (one ARGV an event, keys once)
    args: str = "as_is"
    #: whether every event must answer "a" (the floors return that without work)
    counts: bool = True
    tags: list[str] = field(default_factory=list)


def variants() -> list[Variant]:
    base = base_source()
    out = [
        Variant("base", "the unmodified script", base),
        Variant("prof_time", "profiling copy: phase timers", prof_source(time=True, count=False)),
        Variant(
            "prof_count", "profiling copy: redis.call counts", prof_source(time=False, count=True)
        ),
    ]
    no_markers = _edit(base, "elseif marker_hit(digest, digest_text) then", "elseif false then")
    no_markers = _edit(no_markers, "      add_marker(digest, digest_text)\n", "")
    out.append(
        Variant("no_markers", "no marker lookup, no marker write (cost of tier 1)", no_markers)
    )
    record_call = (
        '      redis.call("HSET", events_key, event_key,\n'
        '        signature .. "\\t" .. ev.record .. "\\t" .. table.concat(allocation, ","))\n'
    )
    out.append(Variant("no_record", "no HSET of the pending record", _edit(base, record_call, "")))
    out.append(
        Variant(
            "record_plain",
            "HSET of the worker's record as passed (no Lua string building)",
            _edit(
                base, record_call, '      redis.call("HSET", events_key, event_key, ev.record)\n'
            ),
        )
    )
    out.append(
        Variant(
            "no_thresholds",
            "note_crossings returns at once",
            _edit(
                base,
                "local function note_crossings(field, before, peak)\n",
                "local function note_crossings(field, before, peak)\n  if true then return end\n",
            ),
        )
    )
    out.append(
        Variant(
            "msgpack_res",
            "resolution entries in cmsgpack, decoded by cmsgpack.unpack",
            _edit(base, "res = cjson.decode(raw)", "res = cmsgpack.unpack(raw)"),
            resolution="msgpack",
        )
    )
    out.append(
        Variant(
            "one_generation",
            "marker lookup in the current generation only (steady: what 4 lookups cost)",
            _edit(
                base,
                "for g = current_generation, oldest_live, -1 do",
                "for g = current_generation, current_generation, -1 do",
            ),
        )
    )
    out.append(
        Variant(
            "int_str_d",
            'int_str as string.format("%d") instead of "%.0f"',
            _edit(base, 'return string.format("%.0f", n)', 'return string.format("%d", n)'),
        )
    )
    out.extend(experiments(base))
    out.extend(structural(base))
    out.append(prof_lean())
    out.extend(split_res_load(base))
    out.extend(plans(base))
    out.append(plan_a_strings(base))
    floor = 'return string.rep("a", (#KEYS - 9) / 2)\n'
    out.append(
        Variant(
            "floor_args",
            "empty script, the same KEYS/ARGV (what passing them costs)",
            floor,
            counts=False,
        )
    )
    out.append(
        Variant(
            "floor_packed",
            "empty script, one ARGV an event and each customer's keys once",
            'return string.rep("a", #ARGV - 9)\n',
            args="packed",
            counts=False,
        )
    )
    return out


# -- Lua-only experiments (the same inputs, the same answers) -----------------------

#: marker_hit bounded by the event's time: an earlier acceptance of the same event was
#: at or after ts - skew (validation refuses events further in the future), so no
#: generation before floor((ts - skew) / generation) can hold its marker.
GEN_BY_TS = (
    "local function marker_hit(digest, text, ts)\n"
    "  local from = math.floor((ts - skew_us) / generation_us)\n"
    "  if from < oldest_live then from = oldest_live end\n"
    "  for g = current_generation, from, -1 do"
)

#: the shard keys of a generation built once per call (not int_str + concat per event)
SHARD_CACHE = """local function shard_key(m, digest)
  local a = digest % (2 ^ m.L)
  if a < m.p then a = digest % (2 ^ (m.L + 1)) end
  local keys = m.keys
  if keys == nil then keys = {} m.keys = keys end
  local k = keys[a]
  if k == nil then k = m.key .. ":" .. int_str(a) keys[a] = k end
  return k
end"""

SHARD_KEY = """local function shard_key(m, digest)
  local a = digest % (2 ^ m.L)
  if a < m.p then a = digest % (2 ^ (m.L + 1)) end
  return m.key .. ":" .. int_str(a)
end"""

#: note_crossings builds its value text only when a rule is crossed
LAZY_VALUE_OLD = """  local value = ARGV[1] .. ":" .. int_str(peak)
  if limit ~= nil then value = value .. ":" .. int_str(limit) end
  for _, rule in ipairs(rules) do
    local point = rule_point(rule, limit)
    if point ~= nil and point > 0 and before < point and peak >= point then
      redis.call("HSETNX", pending_key, "n:" .. field .. ":" .. rule[1], value)"""
LAZY_VALUE_NEW = """  local value = nil
  for _, rule in ipairs(rules) do
    local point = rule_point(rule, limit)
    if point ~= nil and point > 0 and before < point and peak >= point then
      if value == nil then
        value = ARGV[1] .. ":" .. int_str(peak)
        if limit ~= nil then value = value .. ":" .. int_str(limit) end
      end
      redis.call("HSETNX", pending_key, "n:" .. field .. ":" .. rule[1], value)"""

#: a new generation starts with 2^7 shards (as if sized from the one before it), so
#: it never splits while it fills to ~25,000 markers
PRESIZE_OLD = """    m = { key = key, L = tonumber(v[1] or "0"), p = tonumber(v[2] or "0"),"""
PRESIZE_NEW = """    m = { key = key, L = tonumber(v[1] or "7"), p = tonumber(v[2] or "0"),"""


def gen_by_ts(text: str) -> str:
    text = _edit(
        text,
        "local function marker_hit(digest, text)\n  for g = current_generation, oldest_live, -1 do",
        GEN_BY_TS,
    )
    return _edit(
        text,
        "elseif marker_hit(digest, digest_text) then",
        "elseif marker_hit(digest, digest_text, ts) then",
    )


def lean(text: str) -> str:
    """Every Lua-only change above at once (msgpack aside: that is a new encoding)."""
    text = gen_by_ts(text)
    text = _edit(text, SHARD_KEY, SHARD_CACHE)
    text = _edit(text, LAZY_VALUE_OLD, LAZY_VALUE_NEW)
    text = _edit(text, PRESIZE_OLD, PRESIZE_NEW)
    return _edit(text, 'return string.format("%.0f", n)', 'return string.format("%d", n)')


def experiments(base: str) -> list[Variant]:
    return [
        Variant(
            "gen_by_ts",
            "marker lookups only in generations the event's time allows",
            gen_by_ts(base),
        ),
        Variant(
            "shard_cache", "shard keys built once per call", _edit(base, SHARD_KEY, SHARD_CACHE)
        ),
        Variant(
            "lazy_thresholds",
            "threshold value text only on a crossing",
            _edit(base, LAZY_VALUE_OLD, LAZY_VALUE_NEW),
        ),
        Variant(
            "presize",
            "a new marker generation starts at 128 shards (no splits)",
            _edit(base, PRESIZE_OLD, PRESIZE_NEW),
        ),
        Variant(
            "gc_stop",
            "Lua GC stopped for the call, restarted at its end",
            "collectgarbage('stop')\n"
            + _edit(
                base,
                "return table.concat(out)",
                "local result = table.concat(out)\ncollectgarbage('restart')\nreturn result",
            ),
        ),
        Variant(
            "lean_lua",
            "gen_by_ts + shard_cache + lazy_thresholds + presize + int_str_d",
            lean(base),
        ),
        Variant(
            "lean_lua_msgpack",
            "lean_lua + msgpack_res",
            _edit(lean(base), "res = cjson.decode(raw)", "res = cmsgpack.unpack(raw)"),
            resolution="msgpack",
        ),
    ]


# -- structural experiments (each on top of lean_lua) ---------------------------------

#: A flat resolution text for the common entry (one entitlement, no filters, no
#: suspensions, no rollover, no rules): "F" then "<start>\t<end>\t<limit>\t<field>\n"
#: per stored period. Written from the JSON by TO_FLAT (run.py) for the experiment.
FLAT_LOAD_OLD = """    res = cjson.decode(raw)
    decoded[resolution_key] = res"""
FLAT_LOAD_NEW = """    if string.byte(raw, 1) == 70 then
      local periods = {}
      for a, b, c, f in string.gmatch(raw, "(%-?%d+)\\t(%-?%d+)\\t(%-?%d+)\\t([^\\n]+)\\n") do
        periods[#periods + 1] = { tonumber(a), tonumber(b), tonumber(c), f }
      end
      res = { flat = periods }
    else
      res = cjson.decode(raw)
    end
    decoded[resolution_key] = res"""
FLAT_CANDS_OLD = """  for _, e in ipairs(res) do
    if (ev.target == "" """
FLAT_CANDS_NEW = """  if res.flat then
    for _, p in ipairs(res.flat) do
      if p[1] <= ts and (p[2] == OPEN or ts < p[2]) then
        cands[1] = { p[4], p[3], true }
        watch_period(p[4], p[3], true, res)
        break
      end
    end
  else
  for _, e in ipairs(res) do
    if (ev.target == "" """
FLAT_END_OLD = """  if #cands == 0 then
    return suspended and "s" or "n\""""
FLAT_END_NEW = """  end
  if #cands == 0 then
    return suspended and "s" or "n\""""

NO_PENDING_OLD = """      redis.call("HINCRBY", pending_key, field, int_str(delta))"""

RECORD_OLD = """      redis.call("HSET", events_key, event_key,
        signature .. "\\t" .. ev.record .. "\\t" .. table.concat(allocation, ","))"""
RECORD_NEW = """      batch_records[#batch_records + 1] = event_key
      batch_records[#batch_records + 1] =
        signature .. "\\t" .. ev.record .. "\\t" .. table.concat(allocation, ",")
      in_batch[event_key] = true"""

MARKER_ADD_OLD = """local function add_marker(digest, text)
  local m = meta(current_generation)
  if redis.call("SADD", shard_key(m, digest), text) == 1 then
    m.n = m.n + 1
    m.added = m.added + 1
    while m.n > LOAD * (2 ^ m.L + m.p) do split(m) end
  end
end"""
MARKER_ADD_NEW = """local pending_markers = {}
local function add_marker(digest, text)
  local m = meta(current_generation)
  local key = shard_key(m, digest)
  local list = pending_markers[key]
  if list == nil then list = {} pending_markers[key] = list end
  list[#list + 1] = text
end

-- the batch's markers, one SADD per shard, then the splits they call for
local function write_markers()
  local m = metas[current_generation]
  if m == nil then return end
  for key, list in pairs(pending_markers) do
    local added = redis.call("SADD", key, unpack(list))
    m.n = m.n + added
    m.added = m.added + added
  end
  while m.n > LOAD * (2 ^ m.L + m.p) do split(m) end
end"""


def flat_res(text: str) -> str:
    text = _edit(text, FLAT_LOAD_OLD, FLAT_LOAD_NEW)
    text = _edit(text, FLAT_CANDS_OLD, FLAT_CANDS_NEW)
    return _edit(text, FLAT_END_OLD, FLAT_END_NEW)


def batched_writes(text: str) -> str:
    """Records and markers written once per batch (variadic HSET, SADD per shard); an
    event key seen earlier in the batch is a duplicate by a Lua table."""
    text = _edit(text, MARKER_ADD_OLD, MARKER_ADD_NEW)
    text = _edit(text, RECORD_OLD, RECORD_NEW)
    text = _edit(
        text, "local ev = {}\n", "local ev = {}\nlocal batch_records = {}\nlocal in_batch = {}\n"
    )
    text = _edit(
        text,
        "  elseif ts < now_us - hot_us + skew_us then",
        '  elseif in_batch[event_key] then\n    code = "d"\n'
        "  elseif ts < now_us - hot_us + skew_us then",
    )
    return _edit(
        text,
        "save_generations()\nwrite_held()",
        'if #batch_records > 0 then redis.call("HSET", events_key, unpack(batch_records)) end\n'
        "write_markers()\nsave_generations()\nwrite_held()",
    )


def structural(base: str) -> list[Variant]:
    lean_text = lean(base)
    flat = flat_res(lean_text)
    batched = batched_writes(lean_text)
    no_pending = _edit(lean_text, NO_PENDING_OLD, "")
    every = _edit(batched_writes(flat_res(lean_text)), NO_PENDING_OLD, "")
    return [
        Variant(
            "lean+flat_res",
            "lean_lua, resolution as flat text (fast path)",
            flat,
            resolution="flat",
        ),
        Variant("lean+batched", "lean_lua, records and markers written once per batch", batched),
        Variant(
            "lean+no_pending",
            "lean_lua without the pending HINCRBYs (flush sums records)",
            no_pending,
        ),
        Variant("lean+all", "lean_lua + flat_res + batched + no_pending", every, resolution="flat"),
    ]


def prof_lean() -> Variant:
    """The phase timers on lean_lua + flat_res + batched (where the rest goes)."""
    text = prof_source(time=True, count=False)
    text = _edit(
        text,
        "local function marker_hit(digest, text)\n  for g = current_generation, oldest_live, -1 do",
        GEN_BY_TS,
    )
    text = _edit(
        text,
        "local hit = marker_hit(digest, digest_text)",
        "local hit = marker_hit(digest, digest_text, ts)",
    )
    text = _edit(text, SHARD_KEY, SHARD_CACHE)
    text = _edit(text, LAZY_VALUE_OLD, LAZY_VALUE_NEW)
    text = _edit(text, PRESIZE_OLD, PRESIZE_NEW)
    text = _edit(text, 'return string.format("%.0f", n)', 'return string.format("%d", n)')
    text = flat_res(text)
    text = _edit(text, MARKER_ADD_OLD, MARKER_ADD_NEW)
    text = _edit(text, RECORD_OLD, RECORD_NEW)
    text = _edit(
        text, "local ev = {}\n", "local ev = {}\nlocal batch_records = {}\nlocal in_batch = {}\n"
    )
    text = _edit(
        text,
        "save_generations()\nwrite_held()",
        'if #batch_records > 0 then redis.call("HSET", events_key, unpack(batch_records)) end\n'
        'enter("write_markers")\nwrite_markers()\nenter("save_gen")\nsave_generations()\nwrite_held()',
    )
    text = _edit(text, 'enter("save_gen")\nif #batch_records', 'enter("record")\nif #batch_records')
    return Variant(
        "prof_lean_all", "phase timers on lean+flat_res+batched", text, resolution="flat"
    )


def split_res_load(base: str) -> list[Variant]:
    """What lean+all's resolution load is made of: the entry read but not parsed (the
    candidate given; its field is the resolution key, unique per customer), and
    neither read nor parsed (what a worker-computed candidate would leave)."""
    every = _edit(batched_writes(flat_res(lean(base))), NO_PENDING_OLD, "")
    parse = (
        "      local periods = {}\n"
        "      for a, b, c, f in string.gmatch(raw, "
        '"(%-?%d+)\\t(%-?%d+)\\t(%-?%d+)\\t([^\\n]+)\\n") do\n'
        "        periods[#periods + 1] = { tonumber(a), tonumber(b), tonumber(c), f }\n"
        "      end\n"
    )
    given = "      local periods = { { 0, OPEN, 1000000000000000, resolution_key } }\n"
    no_parse = _edit(every, parse, given)
    no_get = _edit(
        no_parse, '    local raw = redis.call("GET", resolution_key)', '    local raw = "F"'
    )
    return [
        Variant(
            "lean+all_noparse", "lean+all, entry read, not parsed", no_parse, resolution="flat"
        ),
        Variant(
            "lean+all_noget", "lean+all, entry neither read nor parsed", no_get, resolution="flat"
        ),
    ]


#: the common event (SUM, one candidate, usage, not a hold, far from the exact
#: bound) counted without the generic burn-down and bound loops; anything else falls
#: through to them (the same answers)
FAST_OLD = """  if #cands == 0 then
    return suspended and "s" or "n"
  end
"""
FAST_NEW = """  if #cands == 0 then
    return suspended and "s" or "n"
  end
  if agg == "S" and #cands == 1 and not strict and not ev.hold then
    local c = cands[1]
    local entry = used_entry(used_key, c[1])
    if entry[1] == false and entry[2] + qty <= MAX_UNITS - BIG and not is_big(c[1]) then
      allocation = {}
      if qty > 0 then add_to(used_key, c[1], qty) else allocation[1] = c[1] .. "=0" end
      return "a"
    end
  end
"""


def given_candidate(flat_text: str) -> str:
    """flat_res's parse replaced by a candidate the worker would pass (the entry is
    still read: it is what a version check would compare)."""
    start = flat_text.index("      local periods = {}\n")
    end = flat_text.index("      res = { flat = periods }")
    given = "      local periods = { { 0, OPEN, 1000000000000000, resolution_key } }\n"
    return flat_text[:start] + given + flat_text[end:]


def plans(base: str) -> list[Variant]:
    a = _edit(given_candidate(batched_writes(flat_res(lean(base)))), FAST_OLD, FAST_NEW)
    b = _edit(a, NO_PENDING_OLD, "")
    fast_only = _edit(lean(base), FAST_OLD, FAST_NEW)
    return [
        Variant("lean+fast", "lean_lua + the SUM one-candidate fast path", fast_only),
        Variant(
            "plan_A",
            "lean + batched + candidate given (entry read, not parsed) + fast path",
            a,
            resolution="flat",
        ),
        Variant("plan_B", "plan_A without the pending HINCRBYs", b, resolution="flat"),
    ]


def plan_a_strings(base: str) -> Variant:
    """plan_A with less string work per event: the record's "<signature>\\t<record>\\t"
    made by the worker (emulated: ARGV's record, then the allocation, one concat) and
    no hold-operation parse for an event without one."""
    a = _edit(given_candidate(batched_writes(flat_res(lean(base)))), FAST_OLD, FAST_NEW)
    a = _edit(
        a,
        '        signature .. "\\t" .. ev.record .. "\\t" .. table.concat(allocation, ",")',
        "        ev.record .. (#allocation == 1 and allocation[1]"
        ' or table.concat(allocation, ","))',
    )
    a = _edit(
        a,
        "  local kind, hold_key = hold_op(op)\n",
        '  local kind, hold_key = "", nil\n  if op ~= "" then kind, hold_key = hold_op(op) end\n',
    )
    return Variant("plan_A_str", "plan_A, record prefix from the worker, no hold parse", a, "flat")
