"""The Redis key table of docs/architecture.md is held to the code: every key (and
every field of the hashes whose fields the table names) that meterd writes while it
counts, reserves, rate-limits and flushes is in the table, and every row of the table
is a key meterd writes. A newcomer reads that table first; it cannot drift.

The keys come from Redis itself, after a run that exercises every writer (the ingest
script, UNIQUE_COUNT sets, a counter past 2^52 units, a crossing of an alert
threshold, a flush left in flight, a correction and a recount's flush pause, the
rate limiter, the meter versions, the stats),
so a key built anywhere, in Python or in Lua, is seen."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meterd.core.domain import BillingType, Outcome
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.reserve import Reservation
from meterd.storage.data_format import claim
from meterd.storage.rate_limits import RateLimitStore
from meterd.testing import event

from .helpers import grant

DOCS = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
#: Rows of keys another program writes under meterd's prefix: not written by this run.
WRITTEN_BY_OTHERS = {"P:redbeat:*": "RedBeat, under meterd beat --redbeat"}


def key_table() -> list[tuple[str, str, list[str]]]:
    """The rows of the "Redis keys" table: (key pattern, type, field patterns)."""
    text = DOCS.read_text()
    section = text.split("## Redis keys", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`P:"):
            continue
        named = re.search(r"\(fields ([^)]*)\)", cells[2])
        fields = re.findall(r"`([^`]+)`", named.group(1)) if named else []
        rows.append((cells[0].strip("`"), cells[1], fields))
    return rows


def pattern(text: str, prefix: str = "P") -> re.Pattern[str]:
    """A documented key or field as a regex: ``<name>`` one part without a colon,
    ``{tag}`` a hash tag, ``*`` anything."""
    out = ""
    for token in re.split(r"(<[^>]+>|\{tag\}|\*)", text):
        if token == "*":
            out += ".+"
        elif token == "{tag}":
            out += r"\{[^}]+\}"
        elif token.startswith("<"):
            out += "[^:]+"
        else:
            out += re.escape(token)
    if out.startswith("P"):
        out = re.escape(prefix) + out[1:]
    return re.compile(out + r"\Z")


@pytest.fixture
def busy(runtime: Runtime) -> Runtime:
    """Every writer of Redis has written once."""
    now = utcnow()
    dates = {"starts_at": now - timedelta(days=10), "ends_at": now + timedelta(days=20)}
    rt = runtime
    rt.catalog.create_feature(
        "acme",
        "users",
        now=now - timedelta(days=30),
        scale=0,
        event_type="login",
        aggregation="UNIQUE_COUNT",
        value_property="user",
    )
    rt.catalog.create_feature("acme", "bytes", now=now - timedelta(days=30), scale=0)
    rt.catalog.create_feature(
        "acme",
        "seats",
        now=now - timedelta(days=30),
        scale=0,
        event_type="seats",
        aggregation="LATEST",
        value_property="n",
    )
    grant(rt, quantity="10", now=now, **dates)
    grant(rt, feature="users", quantity="5", now=now, **dates)
    grant(rt, feature="seats", quantity="50", now=now, **dates)
    grant(
        rt, feature="bytes", quantity=None, billing_type=BillingType.PAY_PER_USE, now=now, **dates
    )
    login = {
        "specversion": "1.0",
        "id": "l1",
        "source": "gateway",
        "type": "login",
        "subject": "cust-1",
        "org": "acme",
        "time": now.isoformat(),
        "data": {"user": "ann"},
    }
    seats = {**login, "id": "s1", "type": "seats", "data": {"n": 3}}
    outcomes = rt.ingest.ingest(
        [
            event(event_id="a1", time=now, quantity="9"),  # crosses 80 %: a notification field
            event(event_id="b1", time=now, feature="bytes", quantity="5000000000000000"),
            login,
            seats,
        ],
        now=now,
    ).outcomes
    assert outcomes == [Outcome.ACCEPTED] * 4
    RateLimitStore(rt.redis, rt.redis_keys).take("0123456789abcdef", 10, 10)
    live = Reservation("acme", "cust-1", "api_calls", Decimal("0.5"), "held")
    assert rt.holds.hold(live, 600, now).hold is not None
    done = rt.holds.hold(Reservation("acme", "cust-1", "api_calls", Decimal("0.25"), "x"), 60, now)
    assert done.hold is not None
    rt.holds.settle("acme", done.hold.id, Decimal("0.25"), now)
    rt.counters.begin_flush("in-flight")  # pending and events renamed, as mid-flush
    rt.ingest.ingest([event(event_id="a2", time=now, quantity="0.5")], now=now)
    rt.corrections.amend(  # correct.lua: a correction's record, used and pending
        "acme", "tests", "a1", {"feature": "api_calls", "quantity": "8"},
        reason="r", actor="cli", now=now,
    )  # fmt: skip
    # a level recount holds flush batches back while it reads (lifted when it ends:
    # set here as it is mid-read)
    rt.corrections.counters.pause_flush("recount", 60)
    claim(rt.redis, rt.redis_keys)  # a worker, beat or API process started
    return rt


def written(rt: Runtime) -> dict[str, Any]:
    """Every key of the test's prefix, with its fields when it is a hash."""
    out: dict[str, Any] = {}
    for key in rt.redis.scan_iter(match=rt.redis_keys.all_pattern, count=1000):
        name = key.decode() if isinstance(key, bytes) else key
        kind = rt.redis.type(name)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        fields = None
        if kind == "hash":
            fields = [f.decode() if isinstance(f, bytes) else f for f in rt.redis.hkeys(name)]
        out[name] = fields
    return out


def test_every_key_meterd_writes_is_in_the_docs_key_table(busy: Runtime) -> None:
    prefix = busy.redis_keys.prefix
    table = [pattern(key, prefix) for key, _, _ in key_table()]
    missing = sorted(k for k in written(busy) if not any(p.match(k) for p in table))
    assert not missing, f"keys docs/architecture.md's key table does not name: {missing}"


def test_every_field_of_a_hash_the_table_describes_is_named_there(busy: Runtime) -> None:
    prefix = busy.redis_keys.prefix
    rows = [(pattern(key, prefix), [pattern(f) for f in fields]) for key, _, fields in key_table()]
    unnamed = []
    for key, fields in written(busy).items():
        for key_pattern, field_patterns in rows:
            if key_pattern.match(key) and field_patterns and fields:
                unnamed += [
                    f"{key} {f}" for f in fields if not any(p.match(f) for p in field_patterns)
                ]
    assert not unnamed, f"hash fields the key table does not name: {unnamed}"


def test_every_row_of_the_docs_key_table_is_a_key_meterd_writes(busy: Runtime) -> None:
    prefix = busy.redis_keys.prefix
    keys = list(written(busy))
    unseen = [
        row
        for row, _, _ in key_table()
        if row not in WRITTEN_BY_OTHERS and not any(pattern(row, prefix).match(k) for k in keys)
    ]
    assert not unseen, f"rows of the key table no run writes: {unseen}"


def test_the_keys_python_names_are_the_keys_the_scripts_write(busy: Runtime) -> None:
    """Keys the Lua scripts build themselves (from a prefix or a key they are passed)
    and Python reads by ``RedisKeys``: the two spellings must name the same keys
    (a marker shard Python misnames would silently drop out of the marker figures)."""
    keys, redis = busy.redis_keys, busy.redis
    (generation,) = redis.zrange(keys.marker_generations, 0, -1)
    generation = generation.decode() if isinstance(generation, bytes) else generation
    assert redis.type(keys.marker_generation(generation)) in (b"hash", "hash")
    assert redis.type(keys.marker_shard(generation, 0)) in (b"set", "set")
    (ent_field,) = [
        f
        for f in written(busy)[keys.used("acme", "cust-1")]
        if not f.startswith("t:") and redis.exists(keys.unique_values("acme", "cust-1", f))
    ]
    assert redis.scard(keys.unique_values("acme", "cust-1", ent_field)) == 1
