"""Turning events into the items meters count (see ``meterd.core.meters``).

A usage event (``meterd.usage``) is one item of the feature it names, read by
that feature's aggregation. A raw event becomes one item per feature whose
meter reads its type, started by the event's time (``Meter.starts_by``), and
whose filters its ``data`` matches. Each item is a ``UsageEvent``: counted,
deduplicated and logged on its own. An event's outcome is decided from its
items' (``combined_outcome``).

A meter starts at its feature's creation, by event time: a raw event timed
before it does not feed it. Items are deduplicated each on its own, so without
this a redelivery of an event accepted before the meter existed would be new
to the meter's dedupe and count for it. The rule is a function of stored facts
(the event's time, the feature's ``created_at``), whichever worker sees the
event and whenever. One exception: an operator's replay of dead letters
(``every_meter``) counts an event for every meter that exists at the replay, as
a dead letter is an event never fully counted (docs/meters.md).

The meters of an org are read from the database and kept in each process. A
meter never changes once created (its scale and aggregation are fixed), so the
only way a kept list can be wrong is by missing a feature created since. Two
checks close that:

- the org's meters version (``storage.meter_versions``), bumped after each
  feature is created and compared once a batch: a second meter for an event
  type the list already knows is used from the first batch read after its
  creation was acknowledged (without it, events would not feed it until the
  list expired, and nothing would say so);
- an event naming a feature or type the list does not know has the list read
  again first (``OrgMeters.knows``), so it is never counted with the defaults
  (a scale-0 feature counted at scale 6 would count each unit a million
  times), even if the bump was lost.

The list also expires after ``ttl``: the last resort if a bump failed.

Stale beats unavailable: when the database does not answer, a kept list whose
version still holds (only its ``ttl`` passed) is used for another ``ttl``, so
ingest and reserve go on counting from Redis through a database outage. A list
whose version moved, or could not be read, may lack a new meter: ``of`` then
raises (the batch is retried). A single meter is another matter: a kept one is
right whatever the version (``meter``, all reserve needs).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from meterd.core.domain import Aggregation, Outcome
from meterd.core.errors import InvalidError, UnavailableError
from meterd.core.events import RawEvent, UsageEvent
from meterd.core.meters import MISSING, Meter, item_id, lookup, matches, path_text
from meterd.core.quantity import SCALE, QuantityError, parse_meter_value, to_units
from meterd.logs import get_logger

#: What one item of an event came to: the item to count, or its outcome and why.
ItemResult = UsageEvent | tuple[Outcome, str]

_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class OrgMeters:
    """One org's meters, by the event type they read and by feature."""

    by_type: dict[str, list[Meter]] = field(default_factory=dict)
    by_feature: dict[str, Meter] = field(default_factory=dict)
    #: The creation of the newest meter of each type: a raw event timed at or after
    #: it feeds every meter of its type (no meter to check one by one).
    newest: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def of(cls, meters: Sequence[Meter]) -> OrgMeters:
        by_type: dict[str, list[Meter]] = {}
        newest: dict[str, datetime] = {}
        for meter in meters:
            if meter.event_type is not None:
                by_type.setdefault(meter.event_type, []).append(meter)
                if (created := meter.created_at) is not None:
                    newest[meter.event_type] = max(newest.get(meter.event_type, created), created)
        return cls(by_type, {m.feature: m for m in meters}, newest)

    def knows(self, event: UsageEvent | RawEvent) -> bool:
        """Whether the feature or type the event names has a meter in this list."""
        if isinstance(event, UsageEvent):
            return event.feature in self.by_feature
        return event.type in self.by_type


@dataclass(frozen=True, slots=True)
class _Kept:
    read_at: float
    version: int | None
    meters: OrgMeters
    #: False once the version could not be read: whether a meter was created since
    #: is unknown, so ``of`` reads the list again before using it whole; each of
    #: its meters is still right (``meter``).
    vouched: bool = True


class MeterCatalog:
    """The meters of each org, loaded on first use and kept until the org's meters
    version changes or ``ttl`` passes (longer while the database does not answer)."""

    def __init__(
        self,
        load: Callable[[str], Sequence[Meter]],
        *,
        version: Callable[[str], int] | None = None,
        ttl: timedelta = timedelta(seconds=10),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._version = version
        self._ttl = ttl.total_seconds()
        self._clock = clock
        self._cache: dict[str, _Kept] = {}
        self._lock = threading.Lock()

    def of(self, org: str) -> OrgMeters:
        """The org's meters, complete as of the org's meters version: the kept list
        if its version is current (one Redis read), else read from the database.
        If the database does not answer, the kept list is used as long as its
        version holds; raises what the stores raise otherwise."""
        now = self._clock()
        version = self._current_version(org)
        kept = self._kept(org)
        current = kept is not None and kept.vouched and kept.version == version
        if kept is not None and current and now - kept.read_at < self._ttl:
            return kept.meters
        try:
            return self._read(org, now, version)
        except UnavailableError:
            if kept is None or not current:
                raise  # the kept list may lack a meter created since: not used whole
            # Only its age is against it: nobody created a meter since (the version
            # says so), and meters never change. Kept for another ttl, so a database
            # that hangs is not asked at every batch.
            with self._lock:
                if self._cache.get(org) is kept:  # not replaced by a read meanwhile
                    self._cache[org] = replace(kept, read_at=now)
            get_logger(__name__).warning(
                "meters kept: the database did not answer; counting with the list read"
                " before (no meter was created since)",
                org=org,
                read_seconds_ago=round(now - kept.read_at),
            )
            return kept.meters

    def meter(self, org: str, feature: str) -> Meter | None:
        """The feature's meter, or None if the org has no such feature. A meter never
        changes once created, so a kept one is used whatever its list's age or
        version (no store is read); a feature the kept list lacks has the list read
        again (raises if the database does not answer)."""
        kept = self._kept(org)
        if kept is not None and (found := kept.meters.by_feature.get(feature)) is not None:
            return found
        return self.refresh(org).by_feature.get(feature)

    def refresh(self, org: str) -> OrgMeters:
        """The org's meters read from the database now (and kept)."""
        return self._read(org, self._clock(), self._current_version(org))

    def forget(self, org: str | None = None) -> None:
        """Read the meters again on next use."""
        with self._lock:
            if org is None:
                self._cache.clear()
            else:
                self._cache.pop(org, None)

    def _kept(self, org: str) -> _Kept | None:
        with self._lock:
            return self._cache.get(org)

    def _current_version(self, org: str) -> int | None:
        if self._version is None:
            return None
        try:
            return self._version(org)
        except Exception:
            # Unread, the version cannot vouch for the kept list: read it again
            # before using it whole (the caller sees the error and retries).
            with self._lock:
                kept = self._cache.get(org)
                if kept is not None:
                    self._cache[org] = replace(kept, vouched=False)
            raise

    def _read(self, org: str, now: float, version: int | None) -> OrgMeters:
        # The version is read before the meters: a meter created in between makes
        # the next check read them once more, never keeps a list that lacks it.
        meters = OrgMeters.of(self._load(org))
        with self._lock:
            self._cache[org] = _Kept(now, version, meters)
        return meters


def items_of(
    event: UsageEvent | RawEvent, meters: OrgMeters, *, every_meter: bool = False
) -> list[ItemResult]:
    """The items ``event`` feeds, or the outcome of each item that cannot be counted.
    A raw event feeds the meters of its type created at or before its time, or
    with ``every_meter`` (an operator's replay of a dead letter) every meter of its
    type. A raw event no meter reads (at its time) is one ``invalid`` result; one
    whose data matches none of the meters of its type is one ``no_entitlement``
    result."""
    if isinstance(event, UsageEvent):
        meter = meters.by_feature.get(event.feature)
        return [_usage_item(event, meter) if meter is not None else event]
    candidates = meters.by_type.get(event.type)
    if not candidates:
        return [
            (
                Outcome.INVALID,
                f"no feature meters events of type {event.type!r}"
                " (create one with event_type, then replay this event)",
            )
        ]
    newest = meters.newest.get(event.type)
    if not every_meter and newest is not None and event.time < newest:
        candidates = [m for m in candidates if m.starts_by(event.time)]
        if not candidates:
            return [
                (
                    Outcome.INVALID,
                    f"no feature metered events of type {event.type!r} at"
                    f" {event.time.isoformat()}: the features that meter them were created"
                    " later (a meter starts at its creation; replay this event to count it"
                    " for them)",
                )
            ]
    chosen = [m for m in candidates if matches(event.data, m.filters)]
    if not chosen:
        names = ", ".join(sorted(m.feature for m in candidates))
        return [
            (
                Outcome.NO_ENTITLEMENT,
                f"the data of this {event.type!r} event matches the filters of none of"
                f" the features that meter its type ({names})",
            )
        ]
    return [_raw_item(event, meter) for meter in chosen]


def _usage_item(event: UsageEvent, meter: Meter) -> ItemResult:
    agg = meter.aggregation
    if agg is Aggregation.SUM and meter.scale == event.scale:
        return _checked(event)  # the common case, as parsed
    unique = None
    quantity = event.quantity
    if agg is Aggregation.COUNT:
        quantity = _ONE
    elif agg is Aggregation.UNIQUE_COUNT:
        assert meter.value_property is not None  # check_meter requires it
        found = _distinct(event.data, meter.value_property, meter.feature)
        if isinstance(found, tuple):
            return found
        unique, quantity = found, _ONE
    item = replace(
        event, quantity=quantity, aggregation=agg, scale=meter.scale, unique_value=unique
    )
    return _checked(item)


def _raw_item(event: RawEvent, meter: Meter) -> ItemResult:
    agg = meter.aggregation
    unique = None
    if agg is Aggregation.COUNT:
        quantity = _ONE
    else:
        assert meter.value_property is not None  # check_meter requires it
        if agg is Aggregation.UNIQUE_COUNT:
            found = _distinct(event.data, meter.value_property, meter.feature)
            if isinstance(found, tuple):
                return found
            unique, quantity = found, _ONE
        else:
            value = lookup(event.data, meter.value_property)
            where = f"data.{path_text(meter.value_property)}"
            if value is MISSING:
                return Outcome.INVALID, f"{where} is missing (feature {meter.feature!r} reads it)"
            try:
                quantity = parse_meter_value(value)
            except InvalidError as exc:
                return Outcome.INVALID, f"{where} (feature {meter.feature!r}): {exc}"
    item = UsageEvent(
        org=event.org,
        customer=event.customer,
        feature=meter.feature,
        source=event.source,
        id=item_id(event.id, meter.feature),
        time=event.time,
        quantity=quantity,
        entitlement_id=None,
        data=event.data,
        aggregation=agg,
        scale=meter.scale,
        unique_value=unique,
    )
    return _checked(item)


def distinct_value(data: object, meter: Meter) -> str | None:
    """The distinct value a UNIQUE_COUNT meter counts for ``data`` (None: it has none
    the meter could count)."""
    if meter.value_property is None:
        return None
    found = _distinct(data, meter.value_property, meter.feature)
    return found if isinstance(found, str) else None


def _distinct(data: object, path: tuple[str, ...], feature: str) -> str | tuple[Outcome, str]:
    """The distinct value a UNIQUE_COUNT item counts, as canonical JSON text."""
    value = lookup(data, path)
    where = f"data.{path_text(path)}"
    if value is MISSING:
        return Outcome.INVALID, f"{where} is missing (feature {feature!r} counts its values)"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return Outcome.INVALID, (
            f"{where} must be text or an integer (feature {feature!r} counts distinct values)"
        )
    return json.dumps(value, ensure_ascii=False)


def _checked(item: UsageEvent) -> ItemResult:
    if item.scale == SCALE:
        return item  # the grammar admits at most six fractional digits
    try:
        to_units(item.quantity, item.scale)
    except QuantityError as exc:
        return Outcome.INVALID, f"feature {item.feature!r}: {exc}"
    return item


#: Which outcome an event shows when its items differ: one that needs attention
#: (dead-lettered) first, then accepted, then duplicate.
_PRECEDENCE = (
    Outcome.INVALID,
    Outcome.LATE,
    Outcome.SUSPENDED,
    Outcome.NO_ENTITLEMENT,
    Outcome.ACCEPTED,
    Outcome.DUPLICATE,
)


def combined_outcome(outcomes: Sequence[Outcome]) -> Outcome:
    """The outcome of an event from its items': the first of ``_PRECEDENCE`` any of
    them has. An event with an item to dead-letter is dead-lettered whole: its
    replay counts the items not counted yet, and the others come back duplicates."""
    present = set(outcomes)
    return next(o for o in _PRECEDENCE if o in present)
