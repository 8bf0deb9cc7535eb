"""Events: CloudEvents 1.0 (structured JSON) validated into ``UsageEvent`` or ``RawEvent``.

Every event names its customer in ``subject`` and its organisation in the
``org`` extension attribute. A usage event (``type: meterd.usage``) carries
``data.feature`` and ``data.quantity``; an event of any other type is a raw
event, which the meters over its type read (``meterd.core.meters``,
``services/meters.py`` turns it into the ``UsageEvent`` items they count).
Parsing never raises for bad input: it returns an ``InvalidEvent`` with a
human-readable reason, so one bad event can be dead-lettered while the rest of
its batch is counted.
"""

from __future__ import annotations

import json
import math
import reprlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from meterd.core.domain import (
    CUSTOMER_ID_MAX,
    FEATURE_KEY_PATTERN,
    ORG_ID_PATTERN,
    PRINTABLE_PATTERN,
    Aggregation,
    Outcome,
)
from meterd.core.holds import HoldOp
from meterd.core.meters import EVENT_TYPE_PATTERN, USAGE_EVENT_TYPE
from meterd.core.quantity import QuantityError, parse_event_quantity, to_units
from meterd.core.timeutil import epoch_micros, isoformat

__all__ = [
    "USAGE_EVENT_TYPE",
    "InvalidEvent",
    "RawEvent",
    "UsageEvent",
    "parse_event_by_model",
]

#: How deep an event may nest objects and arrays (the event object is level 1, its
#: ``data`` level 2): deeper is refused before validation, so no decoder, encoder or
#: validator down the line recurses into it.
MAX_EVENT_DEPTH = 16
#: An event's size as compact UTF-8 JSON, ``data`` and extension attributes included.
MAX_EVENT_BYTES = 64 * 1024
#: The longest ``id`` and ``source`` (the customer in ``subject``: ``CUSTOMER_ID_MAX``).
MAX_ID_LENGTH = 512
#: What a dead letter keeps of an event refused for its size or shape (``stand_in``).
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxstring, _EXCERPT.maxother = 4, 200, 200
_EXCERPT.maxdict = _EXCERPT.maxlist = 20
_EXCERPT_CHARS = 2000


def _quantity(value: object) -> Decimal:
    try:
        return parse_event_quantity(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("time must carry a timezone (RFC 3339), e.g. 2026-11-22T10:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time is out of range: in UTC it must fall in years 1 to 9999") from None


NonEmpty = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=PRINTABLE_PATTERN)
]


class UsageData(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    feature: Annotated[str, StringConstraints(pattern=FEATURE_KEY_PATTERN.pattern)]
    #: The exact quantity (the wire value is a decimal string or number).
    quantity: Annotated[Decimal, BeforeValidator(_quantity)]
    entitlement_id: uuid.UUID | None = None


class CloudEventEnvelope(BaseModel):
    """The wire shape of one event; ``data`` is read by its type."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: NonEmpty
    source: NonEmpty
    type: Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN)]
    subject: Annotated[
        str, StringConstraints(min_length=1, max_length=CUSTOMER_ID_MAX, pattern=PRINTABLE_PATTERN)
    ]
    org: Annotated[str, StringConstraints(pattern=ORG_ID_PATTERN.pattern)]
    time: Annotated[datetime, AfterValidator(_aware_utc)] | None = None
    datacontenttype: str | None = Field(
        default=None, max_length=128, pattern=r"^application/(.+\+)?json"
    )
    data: dict[str, Any]


class CloudUsageEvent(CloudEventEnvelope):
    """The wire shape of a usage event: validated in one pass, ``data`` included."""

    type: Literal["meterd.usage"]
    data: UsageData  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """What is counted: a validated usage event, or one item of a raw event (what it
    feeds one feature with; ``id`` is then ``meters.item_id(event id, feature)``)."""

    org: str
    customer: str
    feature: str
    source: str
    id: str
    time: datetime
    #: The value counted: the quantity (SUM, MAX, LATEST), or 1 (COUNT, UNIQUE_COUNT).
    quantity: Decimal
    entitlement_id: uuid.UUID | None
    #: The event's ``data`` as sent (kept in the event log; dimensions match on it).
    data: Mapping[str, Any] = field(default_factory=dict)
    aggregation: Aggregation = Aggregation.SUM
    #: The feature's scale: the quantity is counted as integer 10^-scale units.
    scale: int = 6
    #: UNIQUE_COUNT: the distinct value (as JSON text) this event counts once a period.
    unique_value: str | None = None
    #: A hold this event makes (a reservation held, not consumed) or settles.
    hold: HoldOp | None = None

    @property
    def time_micros(self) -> int:
        return epoch_micros(self.time)

    @property
    def units(self) -> int:
        """The quantity in integer 10^-scale units (``QuantityError`` if it has more
        fractional digits than the scale)."""
        return to_units(self.quantity, self.scale)


@dataclass(frozen=True, slots=True)
class RawEvent:
    """A validated event of a type other than ``meterd.usage``: meters read it."""

    org: str
    customer: str
    source: str
    id: str
    type: str
    time: datetime
    data: Mapping[str, Any]


# ``new_usage_event``, ``new_raw_event``: a frozen dataclass sets each field through
# ``object.__setattr__``, several times the cost of the fast path's whole validation.
# These twins have the same slots (and base), set them plainly, and become the
# frozen class by ``__class__`` assignment, which Python allows between classes of
# one layout. ``tests/test_fast_events.py`` checks that they build equal events.


class _NewUsageEvent:
    __slots__ = UsageEvent.__slots__


class _NewRawEvent:
    __slots__ = RawEvent.__slots__


def new_usage_event(
    org: str,
    customer: str,
    feature: str,
    source: str,
    id: str,
    time: datetime,
    quantity: Decimal,
    entitlement_id: uuid.UUID | None,
    data: Mapping[str, Any],
) -> UsageEvent:
    """``UsageEvent(...)`` of these fields and the defaults of the others, built fast."""
    event: Any = _NewUsageEvent()
    event.org = org
    event.customer = customer
    event.feature = feature
    event.source = source
    event.id = id
    event.time = time
    event.quantity = quantity
    event.entitlement_id = entitlement_id
    event.data = data
    event.aggregation = Aggregation.SUM
    event.scale = 6
    event.unique_value = None
    event.hold = None
    event.__class__ = UsageEvent
    return event  # type: ignore[no-any-return]


def new_raw_event(
    org: str,
    customer: str,
    source: str,
    id: str,
    type: str,
    time: datetime,
    data: Mapping[str, Any],
) -> RawEvent:
    """``RawEvent(...)``, built fast."""
    event: Any = _NewRawEvent()
    event.org = org
    event.customer = customer
    event.source = source
    event.id = id
    event.type = type
    event.time = time
    event.data = data
    event.__class__ = RawEvent
    return event  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """An event that failed validation, with why."""

    payload: Any
    reason: str


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def time_verdict(
    event: UsageEvent | RawEvent, now: datetime, *, future_skew: timedelta, late_window: timedelta
) -> tuple[Outcome, str] | None:
    """The worker's time rules, for any hop to apply at once: an event timed beyond
    the producers' clock skew is invalid; one older than the late window is late.
    None: its time is acceptable."""
    if event.time > now + future_skew:
        return Outcome.INVALID, (
            f"time {event.time.isoformat()} is in the future (beyond clock skew)"
        )
    if event.time < now - late_window:
        days = late_window.total_seconds() / 86400
        return Outcome.LATE, (
            f"event time {event.time.isoformat()} is older than the late window ({days:g} days)"
        )
    return None


def with_time(payload: Any, event: UsageEvent | RawEvent) -> Any:
    """The payload with the event's time written in, if it had none: the first hop
    that sees an event stamps its receive time, and every later hop (the queue, a
    dead letter, a replay) keeps it."""
    if isinstance(payload, dict) and payload.get("time") is None:
        return {**payload, "time": isoformat(event.time)}
    return payload


def _name(key: object) -> str:
    """A key as a path segment: itself if short and plain, else a short repr."""
    if isinstance(key, str) and key.isascii() and key.isprintable() and len(key) <= 40:
        return key
    return repr(key if not isinstance(key, str) else key[:40])


def shape_problem(payload: Any) -> str | None:
    """Why an event cannot be carried as it is (None: it can): nested deeper than
    ``MAX_EVENT_DEPTH``, larger than ``MAX_EVENT_BYTES`` as JSON, text that is not
    Unicode (a lone surrogate, which no store or encoder takes), a number that is not
    JSON (NaN, infinity), or a value that is no JSON value at all (what kombu's JSON
    revives from ``__type__`` objects). The answer names the field. Iterative: a
    payload of any depth costs no recursion. The size is measured exactly (encoded)
    only when a cheap upper bound from the walk does not already prove it small."""
    if not isinstance(payload, (dict, list)):
        problem = _leaf_problem(payload)
        return None if problem is None else f"event: {problem}"
    bound = 2  # an upper bound of the payload's size as JSON
    stack: list[tuple[Any, int, _Path]] = [(payload, 1, None)]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_EVENT_DEPTH:
            return f"{_path(where)}: nested deeper than {MAX_EVENT_DEPTH} levels"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                if not key.isascii() and not _is_text(key):
                    return f"{_path((where, key))}: a key must be valid Unicode text"
                bound += 6 * len(key) + 4  # escaped at worst, quotes, colon, comma
            if isinstance(item, str):
                if not item.isascii() and not _is_text(item):
                    return f"{_path((where, key))}: text is not valid Unicode (a lone surrogate)"
                bound += 6 * len(item) + 3
            elif isinstance(item, (dict, list)):
                bound += 3
                stack.append((item, depth + 1, (where, key)))
            elif (problem := _leaf_problem(item)) is not None:
                return f"{_path((where, key))}: {problem}"
            else:
                bound += _NUMBER_BYTES if not isinstance(item, int) else 5 + item.bit_length()
    if bound <= MAX_EVENT_BYTES:
        return None
    size = _json_size(payload)
    if size > MAX_EVENT_BYTES:
        data = payload.get("data") if isinstance(payload, dict) else None
        part = "data" if data is not None and _json_size(data) > MAX_EVENT_BYTES // 2 else "event"
        return f"{part}: the event is {size:,} bytes as JSON, at most {MAX_EVENT_BYTES:,}"
    return None


#: The longest JSON text of a float, ``null`` or a boolean (``-1.2345678901234567e-308``).
_NUMBER_BYTES = 25


def _leaf_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return None if _is_text(value) else "text is not valid Unicode (a lone surrogate)"
    if isinstance(value, float):
        return None if math.isfinite(value) else "NaN and infinities are not JSON numbers"
    if value is None or isinstance(value, (bool, int)):
        return None
    return f"not a JSON value ({type(value).__name__})"


#: Where a value sits in an event: (the parent's path, a key or an index), None at the top.
_Path = tuple[Any, str | int] | None


def _path(where: _Path) -> str:
    """A path like ``data.tags[3]`` (built only when a problem is reported)."""
    segments: list[str] = []
    while where is not None:
        where, key = where
        if isinstance(key, int):
            segments.append(f"[{key}]")
        else:
            segments.append(f".{_name(key)}")
    return "".join(reversed(segments)).lstrip(".") or "event"


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def is_short_text(value: object) -> bool:
    """Whether ``value`` is text that may be echoed back or stored as an id: a string
    of at most ``MAX_ID_LENGTH`` characters that is valid Unicode."""
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and _is_text(value)


def _is_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def stand_in(payload: Any, reason: str) -> dict[str, Any]:
    """What a dead letter keeps of an event refused for its shape: its id and source
    (if they are short text), why, and a bounded excerpt; never the payload itself,
    which no encoder may be able to write."""
    kept: dict[str, Any] = {"meterd_not_kept": reason}
    if isinstance(payload, dict):
        for key in ("id", "source", "subject", "org"):
            value = payload.get(key)
            if is_short_text(value):
                kept[key] = value
    kept["excerpt"] = _EXCERPT.repr(payload)[:_EXCERPT_CHARS]
    return kept


def dead_letter_payload(payload: Any) -> Any:
    """The payload as a dead letter may keep it: itself, or its ``stand_in`` if its
    shape is refused (too deep, too large, not encodable)."""
    problem = shape_problem(payload)
    return payload if problem is None else stand_in(payload, problem)


def parse_event_by_model(
    payload: Any, *, received_at: datetime, org: str | None = None
) -> UsageEvent | RawEvent | InvalidEvent:
    """``parse_event`` by the full model alone: what every event not of the common
    shape gets, and the reference the fast path is tested against."""
    if not isinstance(payload, dict):
        return InvalidEvent(payload, f"event must be a JSON object, got {type(payload).__name__}")
    problem = shape_problem(payload)
    if problem is not None:
        return InvalidEvent(stand_in(payload, problem), problem)
    if org is not None:
        payload = {**payload, "org": org}
    usage = payload.get("type") == USAGE_EVENT_TYPE
    model = CloudUsageEvent if usage else CloudEventEnvelope  # usage: data in the same pass
    try:
        event = model.model_validate(payload)
    except ValidationError as exc:
        return InvalidEvent(payload, _describe(exc))
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - defensive
        return InvalidEvent(payload, f"event could not be read: {exc}")
    time = event.time or received_at
    if isinstance(event, CloudUsageEvent):
        return UsageEvent(
            org=event.org,
            customer=event.subject,
            feature=event.data.feature,
            source=event.source,
            id=event.id,
            time=time,
            quantity=event.data.quantity,
            entitlement_id=event.data.entitlement_id,
            data=payload["data"],
        )
    return RawEvent(
        org=event.org,
        customer=event.subject,
        source=event.source,
        id=event.id,
        type=event.type,
        time=time,
        data=payload["data"],
    )
