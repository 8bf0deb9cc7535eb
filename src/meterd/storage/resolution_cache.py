"""The worker's copy of resolution entries, and the candidate period it gives
ingest.lua for the common event (issue 25).

``ingest.lua`` spends most of its time per customer on reading and decoding the
resolution entry (``storage/resolution.py``) and choosing the period an event is
counted in. For the common shape the worker does that choice instead: it keeps a
small per-process cache of entries (raw text as Redis holds it), and for an event of
the common shape passes the candidate (field, limit, pre-paid) with the raw text it
computed it from. The script still GETs the entry and takes the candidate only if
what it read is byte for byte that text; otherwise (the entry changed, or is gone)
it decides as it always did. So the cache is never trusted: a stale copy only costs
the script the work it would have done anyway.

The common shape (``fast_entry`` and ``candidate``): the entry is a list of exactly
one entitlement with no dimension filters ("f"), suspensions ("x"), rollover ("o")
or alert rules ("a"); the event is a SUM (or COUNT) and not a hold operation; its
target is none or that entitlement; starts <= ts < usable until; and either the
entitlement is PAY_PER_USE (the period is the event's UTC month, no limit is
enforced) or ts lies in one of its stored periods (the stored period with the
greatest start at or before ts, ending after ts or open). That is exactly the first
branch of ingest/status.lua's ``in_window`` and ingest/periods.lua's ``period_of``
(tests/test_resolution_cache.py holds them together).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeGuard

#: How many entries a process keeps (least recently used out first). An entry of one
#: monthly entitlement with two stored periods (382 bytes of JSON) costs about 1.4 KB
#: of Python objects besides its key (raw text, the fast tuple, the dict's slot;
#: tracemalloc), so a full cache holds about 6 MB.
MAX_ENTRIES = 4096
#: How long a fetched entry is used, seconds. Staleness is harmless (the script checks
#: the text), it only makes the script do the full work until the worker fetches again.
TTL_SECONDS = 5.0

_OPEN = -1
#: A stored period of the fast entry: (start, end or -1, limit, field).
StoredPeriod = tuple[int, int, int, str]
#: The fast data of an entry: (id hex, starts, usable until, pay-per-use, quantity,
#: stored periods sorted by start, ties in the entry's order).
FastEntry = tuple[str, int, int, bool, int, tuple[StoredPeriod, ...]]
#: A candidate for ingest.lua: (field, limit, pre-paid).
Candidate = tuple[str, int, bool]


def _int(value: Any) -> TypeGuard[int]:
    return type(value) is int and -(2**53) < value < 2**53


def _plain(value: Any) -> TypeGuard[str]:
    """A string ingest.lua can take in a candidate: no ASCII GS or RS (its separators)."""
    return isinstance(value, str) and "\x1d" not in value and "\x1e" not in value


def fast_entry(raw: str) -> FastEntry | None:
    """The data ``candidate`` needs, if the entry (JSON text) has the common shape."""
    if "\x1e" in raw:  # never in the JSON meterd writes: it joins the entries given
        return None
    try:
        entries = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        return None
    e = entries[0]
    if "f" in e or "x" in e or "o" in e or "a" in e:
        return None
    ident, starts, until, billing, quantity = (
        e.get("i"),
        e.get("s"),
        e.get("u"),
        e.get("b"),
        e.get("q"),
    )
    if not _plain(ident) or not _int(starts) or not _int(until):
        return None
    if not _int(quantity):
        return None
    if billing == "U":
        return (ident, starts, until, True, quantity, ())
    periods = e.get("p")
    if billing != "P" or not isinstance(periods, list):
        return None
    stored: list[tuple[int, int, StoredPeriod]] = []
    for n, p in enumerate(periods):
        if not (isinstance(p, list) and len(p) == 4 and _int(p[0]) and _int(p[1]) and _int(p[2])):
            return None
        if not _plain(p[3]):
            return None
        stored.append((p[0], n, (p[0], p[1], p[2], p[3])))
    stored.sort()
    return (ident, starts, until, False, quantity, tuple(s[2] for s in stored))


def candidate(fast: FastEntry, ts: int, month: int, target: str) -> Candidate | None:
    """The one candidate ingest.lua would choose for a SUM event at ``ts`` (``month``:
    the start of its UTC month, epoch us), or None where this cannot tell cheaply."""
    ident, starts, until, pay_per_use, quantity, periods = fast
    if (target and target != ident) or ts < starts or (until != _OPEN and ts >= until):
        return None
    if pay_per_use:
        return (f"{ident}:{month}", quantity, False)
    latest: StoredPeriod | None = None
    for p in periods:  # sorted by start: the last at or before ts (the first of equals)
        if p[0] > ts:
            break
        if latest is None or p[0] > latest[0]:
            latest = p
    if latest is None or (latest[1] != _OPEN and ts >= latest[1]):
        return None
    return (latest[3], latest[2], True)


class ResolutionCache:
    """Resolution key -> (raw text, fast data or None, fetched at), at most
    ``max_entries`` of them, each used for ``ttl`` seconds. Thread-safe (the API
    counts from several threads): one lock a lookup, not held across the fetch."""

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        ttl: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[str, FastEntry | None, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(
        self, keys: Iterable[str], fetch: Callable[[Sequence[str]], Sequence[bytes | None]]
    ) -> dict[str, tuple[str, FastEntry]]:
        """The entries of ``keys`` that have the common shape, fetching those missing
        or expired in one ``fetch`` (an MGET): key -> (raw text, fast data)."""
        now = self._clock()
        entries = self._entries
        out: dict[str, tuple[str, FastEntry]] = {}
        missing: list[str] = []
        with self._lock:
            for key in keys:
                got = entries.get(key)
                if got is None or now - got[2] >= self.ttl:
                    missing.append(key)
                    continue
                entries.move_to_end(key)
                if got[1] is not None:
                    out[key] = (got[0], got[1])
        if not missing:
            return out
        fetched: list[tuple[str, str | None, FastEntry | None]] = []
        for key, value in zip(missing, fetch(missing), strict=True):
            if value is None:  # not cached in Redis: the script answers m
                fetched.append((key, None, None))
                continue
            raw = value.decode() if isinstance(value, bytes) else str(value)
            fast = fast_entry(raw)
            fetched.append((key, raw, fast))
            if fast is not None:
                out[key] = (raw, fast)
        with self._lock:
            for key, text, fast in fetched:
                if text is None:
                    entries.pop(key, None)
                else:
                    entries[key] = (text, fast, now)
                    entries.move_to_end(key)
            while len(entries) > self.max_entries:
                entries.popitem(last=False)
        return out

    def forget(self, keys: Iterable[str]) -> None:
        """Drop entries known to have changed (written or missing)."""
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)
