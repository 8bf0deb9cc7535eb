"""Every Lua script's header documents exactly the KEYS and ARGV its Python caller
passes. The header is written by hand and checked here (not generated): each real
caller is run against a recording client, and every position it passes must be
named by exactly one ``KEYS[...]``/``ARGV[...]`` line, and every fixed position
named must be passed.

Header forms: ``KEYS[3]``; per event ``KEYS[2i + 7]`` (``ARGV[9i - 5]``, ``KEYS[i + 7]``:
i counts from 1); the rest ``ARGV[2…]``;
ranges ``KEYS[1 .. n-2]``, ``KEYS[n-1]``, ``KEYS[n]`` (n: how many were passed); a
bare ``ARGV`` for all of them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from meterd import broker
from meterd.core.event_records import Allocation, EventRecord
from meterd.core.events import UsageEvent
from meterd.core.holds import HoldMeta, HoldStatus
from meterd.core.redis_keys import RedisKeys
from meterd.lua import read_fragment, script_source
from meterd.storage.corrections import CorrectionCall, CorrectionCounters
from meterd.storage.counters import CounterStore
from meterd.storage.holds import HoldStore, StoredHold
from meterd.storage.rate_limits import RateLimitStore

SCRIPTS = [
    "ingest",
    "flush_begin",
    "flush_end",
    "pending_snapshot",
    "rate_limit",
    "broker_pop",
    "hold_release",
    "holds_read",
    "holds_expire",
    "correct",
]
#: Events in the recorded ingest batch (per-event positions are checked for each).
EVENTS = 3
ENTRY = re.compile(r"^(KEYS|ARGV)(?:\[([^\]]+)\])?\s", re.MULTILINE)


@dataclass
class Call:
    keys: list[Any]
    args: list[Any]


@dataclass
class Recorder:
    calls: dict[str, list[Call]] = field(default_factory=dict)

    def record(self, text: str, keys: Sequence[Any], args: Sequence[Any]) -> None:
        name = next(n for n in SCRIPTS if script_source(n) == text)
        self.calls.setdefault(name, []).append(Call(list(keys), list(args)))


Rule = Callable[[int, int], bool]  # (position, how many were passed) -> named by it


def rule(spec: str | None) -> tuple[Rule, int | None]:
    """The positions a header entry names, and the fixed position it requires."""
    if spec is None:
        return (lambda p, n: True), None
    text = spec.replace(" ", "")
    if text.isdigit():
        k = int(text)
        return (lambda p, n: p == k), k
    if m := re.fullmatch(r"(\d*)i(?:([+-])(\d+))?", text):
        a, b = int(m[1] or 1), int(m[3] or 0) * (-1 if m[2] == "-" else 1)
        return (lambda p, n: p >= a + b and (p - b) % a == 0), None
    if m := re.fullmatch(r"(\d+)(?:…|\.\.\.)", text):
        start = int(m[1])
        return (lambda p, n: p >= start), start
    if m := re.fullmatch(r"(\d+)\.\.n-(\d+)", text):
        lo, back = int(m[1]), int(m[2])
        return (lambda p, n: lo <= p <= n - back), None
    if m := re.fullmatch(r"n(?:-(\d+))?", text):
        back = int(m[1] or 0)
        return (lambda p, n: p == n - back), None
    raise AssertionError(f"a header entry of unknown form: [{spec}]")


def _ingest_events() -> list[UsageEvent]:
    when = datetime.now(UTC)
    return [
        UsageEvent(
            org="acme",
            customer=f"c{i}",
            feature="api_calls",
            source="t",
            id=f"e{i}",
            time=when,
            quantity=Decimal(1),
            entitlement_id=None,
        )
        for i in range(EVENTS)
    ]


def _counted_twice() -> list[EventRecord]:
    now = datetime.now(UTC)
    part = Allocation(uuid.uuid4(), now - timedelta(days=1), 5)
    return [
        EventRecord("acme", "t", f"e{i}", f"c{i}", "api_calls", now, 5, 0, None, now, {}, (part,))
        for i in range(2)
    ]


def _stored_hold() -> StoredHold:
    now = datetime.now(UTC)
    meta = HoldMeta("acme", "c0", "api_calls", 0, now, None, {}, "k")
    return StoredHold(uuid.uuid4(), HoldStatus.HELD, 1, now, meta, (), None, None)


def _pop_call(recorder: Recorder) -> None:
    """ReliableChannel._brpop_start on a stand-in channel: the EVAL it sends."""

    def send_command(*args: Any) -> None:
        assert args[0] == "EVAL"
        n = args[2]
        recorder.record(args[1], args[3 : 3 + n], args[3 + n :])

    channel = SimpleNamespace(
        brpop_timeout=1,
        _queue_cycle=SimpleNamespace(consume=lambda n: ["celery", "other"]),
        active_queues=["celery", "other"],
        priority_steps=[0, 3],
        _q_for_pri=lambda q, pri: f"{q}\x06\x16{pri}" if pri else q,
        client=SimpleNamespace(connection=SimpleNamespace(send_command=send_command)),
        _waiting=False,
        unacked_index_key="unacked_index",
        unacked_key="unacked",
        global_keyprefix="",
    )
    channel._prefixed = lambda key: broker.ReliableChannel._prefixed(channel, key)  # type: ignore[arg-type]
    broker.ReliableChannel._brpop_start(channel)  # type: ignore[arg-type]


def _correct_call(client: Any, keys: RedisKeys) -> None:
    """CorrectionCounters.apply with a void and an amend (two items)."""
    now = datetime.now(UTC)
    field = f"{uuid.uuid4().hex}:0"
    void = CorrectionCall("k\x1e1", "0:\t{}", [(field, 5, 0)], "api_calls")
    amend = CorrectionCall(
        "k2\x1e1", "3:\t{}", [(field, 5, 0)], "api_calls", (now, now, 3, "", "{}")
    )
    CorrectionCounters(client, keys, late_window=timedelta(days=2)).apply(
        "acme", "c1", [void, amend], now=now, seq=0
    )


@pytest.fixture(scope="module")
def recorded() -> dict[str, list[Call]]:
    """Every script called once or more by its real caller, as the caller passes it."""
    recorder = Recorder()
    client = fakeredis.FakeRedis()
    register = client.register_script

    def spying_register(text: str) -> Callable[..., Any]:
        script = register(text)

        def call(keys: Sequence[Any] = (), args: Sequence[Any] = (), **kw: Any) -> Any:
            recorder.record(text, keys, args)
            return script(keys=keys, args=args, **kw)

        return call

    client.register_script = spying_register  # type: ignore[method-assign]
    keys = RedisKeys("hdr")
    counters = CounterStore(
        client, keys, hot_window=timedelta(hours=1), late_window=timedelta(days=2)
    )
    counters.add_batch(_ingest_events(), now=datetime.now(UTC))
    counters.begin_flush("batch-1")
    counters.end_flush("batch-1", _counted_twice())
    counters.pending_snapshot(["a:1", "b:2"])
    RateLimitStore(client, keys).take("0123456789abcdef", 5, 10)
    holds = HoldStore(client, keys)
    holds.live_figures("acme", "c0", ["a:1", "b:2"], datetime.now(UTC))
    holds.expire_due(datetime.now(UTC))
    holds.release(_stored_hold(), datetime.now(UTC))
    _correct_call(client, keys)
    _pop_call(recorder)
    return recorder.calls


def test_every_script_is_recorded(recorded: dict[str, list[Call]]) -> None:
    assert set(recorded) == set(SCRIPTS)


Entries = list[tuple[str, Rule, int | None]]


def parse_entries(header: str) -> dict[str, Entries]:
    found: dict[str, Entries] = {"KEYS": [], "ARGV": []}
    for m in ENTRY.finditer(header):
        found[m[1]].append((m[2] or "", *rule(m[2])))
    return found


def problems(entries: Entries, kind: str, passed: Sequence[Any]) -> list[str]:
    """What is out of step between a header's entries and the positions passed."""
    n = len(passed)
    found = []
    for p in range(1, n + 1):
        naming = [spec for spec, named, _ in entries if named(p, n)]
        if len(naming) != 1:
            found.append(f"{kind}[{p}] of {n} is named by {naming}")
    found += [f"{kind}[{s}] is not passed" for s, _, req in entries if req is not None and req > n]
    return found


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("kind", ["KEYS", "ARGV"])
def test_the_header_names_each_position_the_caller_passes_once(
    recorded: dict[str, list[Call]], name: str, kind: str
) -> None:
    entries = parse_entries(read_fragment(name).split("]]", 1)[0])[kind]
    for call in recorded[name]:
        assert problems(entries, kind, call.keys if kind == "KEYS" else call.args) == []


def test_the_ingest_header_names_every_position_of_each_event(
    recorded: dict[str, list[Call]],
) -> None:
    (call,) = recorded["ingest"]
    assert len(call.keys) == 9 + 2 * EVENTS  # three customers: two keys each
    # one argument an event, after the counts of the entries and candidates the worker
    # gives (none here: no resolution data is cached)
    assert call.args[9:11] == ["", ""]
    assert len(call.args) == 11 + EVENTS


@pytest.mark.parametrize(
    ("header", "keys", "args"),
    [
        ("KEYS[1]  a\nKEYS[2]  b\nARGV[1]  x\n", ["a"], ["x"]),  # KEYS[2] not passed
        ("KEYS[1]  a\nARGV[1]  x\n", ["a", "b"], ["x"]),  # KEYS[2] passed, not named
        ("KEYS[1]  a\nKEYS[1]  again\n", ["a"], []),  # named twice
        ("KEYS[1]  a\nKEYS[2i + 1]  e\n", ["a", "b", "c", "d"], []),  # KEYS[2]: no entry
    ],
)
def test_the_check_fails_on_a_header_out_of_step(
    header: str, keys: list[str], args: list[str]
) -> None:
    entries = parse_entries(header)
    assert problems(entries["KEYS"], "KEYS", keys) + problems(entries["ARGV"], "ARGV", args)


def test_the_check_fails_when_ingest_passes_an_argument_its_header_lacks(
    recorded: dict[str, list[Call]],
) -> None:
    header = read_fragment("ingest").split("]]", 1)[0].replace("ARGV[9] ", "ARGV_9 ")
    (call,) = recorded["ingest"]
    assert problems(parse_entries(header)["ARGV"], "ARGV", call.args) != []
