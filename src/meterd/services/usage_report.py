"""Usage over time, and the events behind it ("explain my bill").

``usage`` sums the flush's quarter-hour rollups (``usage_rollups``: usage per
entitlement per quarter hour of event time, in UTC) into the windows of a local
calendar: hours, days or months of an IANA time zone. Every offset a zone uses
today is a whole number of quarter hours (India's +05:30, Nepal's +05:45), so
each local hour, day and month is an exact sum of quarter hours, and a day of a
DST change is simply 23 or 25 hours of them.

* **Bounds.** Usage is counted per quarter hour of event time: ``start`` is
  rounded down and ``end`` up to a quarter hour (a bound inside a quarter hour
  takes that whole quarter), and the range counted is ``[start, end)`` so
  rounded. Any instant is accepted; the rounded bounds are what the rows cover.
* **Windows.** A window is a maximal stretch of the range over which the local
  calendar shows the same hour (and the same UTC offset: the hour repeated when
  clocks go back is two windows), the same day, or the same month. The first
  and last windows are clipped to the range counted, so ``window_start`` and
  ``window_end`` always say exactly what a row covers, and the rows of a
  request add up to the usage of its range. A quarter hour is counted in the
  window containing its start (only the local mean time of zones before about
  1900 is not in whole quarter hours).
* **Empty windows** are left out; a request may span at most ``MAX_WINDOWS``
  windows (more: ``InvalidError``, before anything is read), and an answer at
  most ``MAX_ROWS`` rows (more: ``InvalidError``; the rollups are streamed, so
  memory is bounded by the answer, not by the rows read).
* **Groups.** ``group_by`` splits each window by customer, feature or
  entitlement (an entitlement belongs to one customer and one feature, so its
  rows carry both, and its dimension filters: grants per model read as usage
  per model). Rows are sorted by window, then customer, feature,
  entitlement.

``events`` pages the event log: each logged part of the customer's events with
``start <= time < end``, in (time, source, id, part) order, behind an opaque
cursor (a forged or garbled one is a ``CursorError``, 400).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import uuid
import zoneinfo
from bisect import bisect_right
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from meterd.core.corrections import split_correction_id
from meterd.core.errors import InvalidError
from meterd.core.paging import CursorError
from meterd.storage.event_log import QUARTER, EventLog, quarter_of

#: Windows one ``usage`` request may span, at most.
MAX_WINDOWS = 10_000
#: The most rows one usage answer holds (windows x groups).
MAX_ROWS = 50_000
#: Events one ``events`` page may hold, at most.
MAX_PAGE = 1000
#: The range ``usage`` and ``events`` take, in UTC: every local calendar date of
#: it, in any zone, is a date (years 1 to 9999).
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
_RANGE = "from 0001-01-02T00:00:00Z to 9999-12-30T00:00:00Z"
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: A logged id may hold U+001F (a raw event's item) and U+001E (a correction).
_ID_CONTROL = re.compile(r"[\x00-\x1d\x7f]")
_TEXT_MAX = 512
#: The longest logged id (``models.event_rows.LOGGED_ID_LENGTH``).
_ID_MAX = 600
_PART_MAX = 2**31 - 1
_CURSOR_KIND = "events"
_INVALID_CURSOR = "the cursor is not valid: pass back a next value"


class Window(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    MONTH = "MONTH"


class GroupBy(StrEnum):
    CUSTOMER = "customer"
    FEATURE = "feature"
    ENTITLEMENT = "entitlement"


@dataclass(frozen=True, slots=True)
class UsageRow:
    #: Aware, in the requested time zone; clipped to the range counted. (Python
    #: compares and subtracts two datetimes of the same zone on the wall clock:
    #: convert to UTC for durations, e.g. the 25 hours of a DST day.)
    window_start: datetime
    window_end: datetime
    #: Set only when grouped by customer (or entitlement).
    customer_id: str | None
    #: Set only when grouped by feature (or entitlement).
    feature: str | None
    #: Set only when grouped by entitlement.
    entitlement_id: uuid.UUID | None
    quantity: Decimal
    events: int
    #: Grouped by entitlement: its dimension filters (``{"model": "gpt-4o"}``), if
    #: any, so per-model grants read as usage per model.
    filters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class LoggedEventView:
    """One logged part of an accepted event: the whole event when it was counted on
    one entitlement, else part ``part`` of the split (burn-down) over several."""

    source: str
    id: str
    #: The event's time (UTC).
    time: datetime
    customer_id: str
    feature: str
    #: Where this part was counted: the entitlement and its period.
    entitlement_id: uuid.UUID
    period_start: datetime
    #: This part's quantity.
    quantity: Decimal
    #: The whole event's quantity.
    event_quantity: Decimal
    part: int
    #: When a worker accepted it.
    received_at: datetime
    #: The event's ``data`` (part 0 only).
    data: Mapping[str, Any] | None
    #: A correction's row (``core/corrections.py``): the corrected id and the
    #: correction's number; None for an event's row.
    correction: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[LoggedEventView]
    #: Pass back for the next page; None: this is the last one.
    next_cursor: str | None


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Paris``, ``UTC``), or ``InvalidError``."""
    unknown = f"unknown time zone {name[:80]!r}: give an IANA name such as Europe/Paris or UTC"
    if len(name) > 64 or not _ZONE_NAME.fullmatch(name) or name not in _zone_names():
        raise InvalidError(unknown)
    try:
        return ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidError(unknown) from None


def parse_group_by(text: str | None) -> list[GroupBy]:
    """``customer,feature,entitlement`` (any of them, comma-separated) as keys."""
    keys: list[GroupBy] = []
    for raw in (text or "").split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            key = GroupBy(item.lower())
        except ValueError:
            allowed = ", ".join(g.value for g in GroupBy)
            raise InvalidError(f"group_by: {item[:40]!r} is not one of {allowed}") from None
        if key not in keys:
            keys.append(key)
    return keys


class UsageReport:
    def __init__(
        self,
        log: EventLog,
        filters_of: Callable[[Collection[uuid.UUID]], Mapping[uuid.UUID, Mapping[str, Any]]],
        backfilled: Callable[..., Sequence[Any]] | None = None,
    ) -> None:
        """``backfilled``: the backfilled parts' pages (``BackfillStore.page``, the same
        arguments as ``EventLog.page``), listed with the log's."""
        self.log = log
        self.filters_of = filters_of
        self.backfilled = backfilled

    def usage(
        self,
        org: str,
        *,
        customer: str | None,
        feature: str | None,
        start: datetime,
        end: datetime,
        window: Window,
        tz: ZoneInfo,
        group_by: Sequence[GroupBy] = (),
    ) -> list[UsageRow]:
        """The usage of ``[start, end)`` (rounded out to quarter hours) per local
        ``window`` of ``tz``, split by ``group_by``; windows without usage left out."""
        first, last = counted_range(start, end)
        bounds = window_bounds(first, last, Window(window), tz)
        keys = frozenset(GroupBy(g) for g in group_by)
        by_customer = GroupBy.CUSTOMER in keys or GroupBy.ENTITLEMENT in keys
        by_feature = GroupBy.FEATURE in keys or GroupBy.ENTITLEMENT in keys
        by_entitlement = GroupBy.ENTITLEMENT in keys
        sums: dict[tuple[int, str, str, str], list[Any]] = {}
        rollups = self.log.rollups(org, customer=customer, feature=feature, start=first, end=last)
        for r in rollups:
            index = bisect_right(bounds, r.bucket_start) - 1
            if not 0 <= index < len(bounds) - 1:  # pragma: no cover - the query's own range
                continue
            group = (
                r.customer_id if by_customer else None,
                r.feature if by_feature else None,
                r.entitlement_id if by_entitlement else None,
            )
            sort_key = (index, group[0] or "", group[1] or "", str(group[2] or ""))
            entry = sums.get(sort_key)
            if entry is None:
                if len(sums) == MAX_ROWS:
                    raise InvalidError(
                        f"the answer has more than {MAX_ROWS:,} rows: narrow the range or "
                        "the customers, choose a longer window or group by less"
                    )
                sums[sort_key] = [group, Decimal(r.quantity), int(r.events)]
            else:
                entry[1] += Decimal(r.quantity)
                entry[2] += int(r.events)
        filters = (
            self.filters_of({group[2] for group, _, _ in sums.values()}) if by_entitlement else {}
        )
        return [
            UsageRow(
                window_start=bounds[key[0]].astimezone(tz),
                window_end=bounds[key[0] + 1].astimezone(tz),
                customer_id=group[0],
                feature=group[1],
                entitlement_id=group[2],
                quantity=quantity,
                events=events,
                filters=filters.get(group[2]),
            )
            for key, (group, quantity, events) in sorted(sums.items())
        ]

    def events(
        self,
        org: str,
        customer: str,
        *,
        feature: str | None,
        start: datetime,
        end: datetime,
        cursor: str | None,
        limit: int,
    ) -> EventPage:
        """A page of the customer's logged event parts with ``start <= time < end``
        (exactly: no rounding here), after ``cursor`` (None: the first page)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidError(f"limit must be 1 to {MAX_PAGE}")
        first, last = _checked(start, "from"), _checked(end, "to")
        if first >= last:
            raise InvalidError("from must be before to")
        after = decode_cursor(cursor) if cursor else None
        asked: dict[str, Any] = {"feature": feature, "start": first, "end": last, "after": after}
        rows: list[Any] = list(self.log.page(org, customer, **asked, limit=limit + 1))
        if self.backfilled is not None:  # older history, in the same order
            rows += self.backfilled(org, customer, **asked, limit=limit + 1)
            rows.sort(key=lambda r: (r.event_time, r.source, r.event_id, r.part))
        page = [logged_event_view(r) for r in rows[:limit]]
        more = len(rows) > limit
        return EventPage(events=page, next_cursor=encode_cursor(page[-1]) if more else None)


def logged_event_view(row: Any) -> LoggedEventView:
    """From an ``event_log`` row or a backfilled one (the same columns)."""
    return LoggedEventView(
        source=row.source,
        id=row.event_id,
        time=row.event_time,
        customer_id=row.customer_id,
        feature=row.feature,
        entitlement_id=row.entitlement_id,
        period_start=row.period_start,
        quantity=Decimal(row.quantity),
        event_quantity=Decimal(row.event_quantity),
        part=row.part,
        received_at=row.received_at,
        data=row.data,
        correction=split_correction_id(row.event_id),
    )


# -- the range and its windows -------------------------------------------------------------


def _checked(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidError(f"{name} must carry a time zone, e.g. 2026-11-22T10:00:00Z")
    try:
        utc: datetime | None = moment.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise InvalidError(f"{name} is out of range: in UTC it must be {_RANGE}")
    return utc


def counted_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` rounded out to quarter hours, in UTC: what ``usage`` counts."""
    first, last = _checked(start, "from"), _checked(end, "to")
    if first >= last:
        raise InvalidError("from must be before to")
    rounded = quarter_of(last)
    return quarter_of(first), rounded if rounded == last else rounded + QUARTER


def _key(moment: datetime, window: Window, tz: ZoneInfo) -> tuple[Any, ...]:
    """What the local calendar shows of ``moment`` at ``window``'s resolution."""
    local = moment.astimezone(tz)
    if window is Window.MONTH:
        return (local.year, local.month)
    if window is Window.DAY:
        return (local.year, local.month, local.day)
    return (local.year, local.month, local.day, local.hour, local.utcoffset())


def _next_wall(local: datetime, window: Window) -> datetime:
    """The wall-clock (naive) start of the window after the one ``local`` is in;
    OverflowError or ValueError past year 9999."""
    if window is Window.MONTH:
        if local.month == 12:
            return datetime(local.year + 1, 1, 1)
        return datetime(local.year, local.month + 1, 1)
    if window is Window.DAY:
        return datetime.combine(local.date() + timedelta(days=1), time())
    return local.replace(minute=0, second=0, microsecond=0, tzinfo=None) + timedelta(hours=1)


def _ceil_quarter(moment: datetime) -> datetime:
    floor = quarter_of(moment.astimezone(UTC))
    return floor if floor == moment else floor + QUARTER


def _boundary_after(moment: datetime, last: datetime, window: Window, tz: ZoneInfo) -> datetime:
    """The first quarter hour after ``moment`` that is in another window (or ``last``).

    The local calendar's next window start, converted with both readings of an
    ambiguous or missing wall time, gives the candidate; a few quarter-hour steps
    correct it where a DST change falls on the boundary itself (a day that starts
    at 01:00 because midnight was skipped)."""
    key = _key(moment, window, tz)
    try:
        wall = _next_wall(moment.astimezone(tz), window)
        candidates = [wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)]
    except (OverflowError, ValueError):
        return last
    later = [_ceil_quarter(c) for c in candidates if c > moment]
    if not later:
        return last
    boundary = min(min(later), last)
    for _ in range(200):  # earlier: the window changed before the wall-clock start
        previous = boundary - QUARTER
        if previous <= moment or _key(previous, window, tz) == key:
            break
        boundary = previous
    for _ in range(200):  # later: the wall-clock start was skipped or repeated
        if boundary >= last or _key(boundary, window, tz) != key:
            break
        boundary += QUARTER
    return min(boundary, last)


def window_bounds(first: datetime, last: datetime, window: Window, tz: ZoneInfo) -> list[datetime]:
    """The window boundaries of ``[first, last)`` (UTC quarter hours): ``first``,
    each local window start inside the range, ``last``. More than ``MAX_WINDOWS``
    windows is an ``InvalidError``."""
    bounds = [first]
    while bounds[-1] < last:
        if len(bounds) > MAX_WINDOWS:
            raise InvalidError(
                f"the range spans more than {MAX_WINDOWS} {window.value} windows: "
                "narrow from/to or use a longer window"
            )
        bounds.append(_boundary_after(bounds[-1], last, window, tz))
    return bounds


# -- the events cursor ---------------------------------------------------------------------

Position = tuple[datetime, str, str, int]


def encode_cursor(event: LoggedEventView) -> str:
    """The opaque position after ``event`` (URL-safe base64 of a small JSON document)."""
    doc = {
        "k": _CURSOR_KIND,
        "t": event.time.astimezone(UTC).isoformat(),
        "s": event.source,
        "i": event.id,
        "p": event.part,
    }
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _text(value: Any, control: re.Pattern[str] = _CONTROL, longest: int = _TEXT_MAX) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= longest or control.search(value):
        raise ValueError("text")
    return value


def decode_cursor(text: str) -> Position:
    """The position ``encode_cursor`` wrote, checked as strictly as it was written:
    cursors are not signed, so nothing in one reaches the database unchecked."""
    try:
        padded = text + "=" * (-len(text) % 4)
        doc = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8"))
        if not isinstance(doc, dict) or set(doc) != {"k", "t", "s", "i", "p"}:
            raise ValueError("shape")
        if doc["k"] != _CURSOR_KIND or not isinstance(doc["t"], str):
            raise ValueError("kind")
        moment = datetime.fromisoformat(doc["t"])
        if moment.tzinfo is None:
            raise ValueError("naive")
        moment = moment.astimezone(UTC)  # OverflowError outside years 1 to 9999
        part = doc["p"]
        if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part <= _PART_MAX:
            raise ValueError("part")
        return moment, _text(doc["s"]), _text(doc["i"], _ID_CONTROL, _ID_MAX), part
    except (ValueError, ArithmeticError, TypeError, UnicodeError, binascii.Error):
        raise CursorError(_INVALID_CURSOR) from None
