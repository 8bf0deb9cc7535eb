"""Usage events: CloudEvents 1.0 (structured JSON) validated into ``UsageEvent``.

A usage event names its customer in ``subject``, its organisation in the
``org`` extension attribute, and carries ``data.feature`` and
``data.quantity``. Parsing never raises for bad input: it returns an
``InvalidEvent`` with a human-readable reason, so one bad event can be
dead-lettered while the rest of its batch is counted.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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

from meterd.domain import (
    CUSTOMER_ID_MAX,
    FEATURE_KEY_PATTERN,
    ORG_ID_PATTERN,
    PRINTABLE_PATTERN,
    Outcome,
)
from meterd.quantity import QuantityError, parse_quantity_micros
from meterd.timeutil import epoch_micros, isoformat

USAGE_EVENT_TYPE = "meterd.usage"


def _quantity_micros(value: object) -> int:
    try:
        return parse_quantity_micros(value)
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
    str, StringConstraints(min_length=1, max_length=512, pattern=PRINTABLE_PATTERN)
]


class UsageData(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    feature: Annotated[str, StringConstraints(pattern=FEATURE_KEY_PATTERN.pattern)]
    #: The quantity in integer micro-units (the wire value is a decimal string or number).
    quantity: Annotated[int, BeforeValidator(_quantity_micros)]
    entitlement_id: uuid.UUID | None = None


class CloudUsageEvent(BaseModel):
    """The wire shape of one usage event."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: NonEmpty
    source: NonEmpty
    type: Literal["meterd.usage"]
    subject: Annotated[
        str, StringConstraints(min_length=1, max_length=CUSTOMER_ID_MAX, pattern=PRINTABLE_PATTERN)
    ]
    org: Annotated[str, StringConstraints(pattern=ORG_ID_PATTERN.pattern)]
    time: Annotated[datetime, AfterValidator(_aware_utc)] | None = None
    datacontenttype: str | None = Field(default=None, pattern=r"^application/(.+\+)?json")
    data: UsageData


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """A validated usage event, ready to be counted."""

    org: str
    customer: str
    feature: str
    source: str
    id: str
    time: datetime
    quantity_micros: int
    entitlement_id: uuid.UUID | None
    #: The event's ``data`` as sent (kept in the event log for meters over raw events).
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def time_micros(self) -> int:
        return epoch_micros(self.time)


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
    event: UsageEvent, now: datetime, *, future_skew: timedelta, late_window: timedelta
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


def with_time(payload: Any, event: UsageEvent) -> Any:
    """The payload with the event's time written in, if it had none: the first hop
    that sees an event stamps its receive time, and every later hop (the queue, a
    dead letter, a replay) keeps it."""
    if isinstance(payload, dict) and payload.get("time") is None:
        return {**payload, "time": isoformat(event.time)}
    return payload


def parse_event(
    payload: Any, *, received_at: datetime, org: str | None = None
) -> UsageEvent | InvalidEvent:
    """Validate one CloudEvent. ``org`` (from an API key) overrides the attribute."""
    if not isinstance(payload, dict):
        return InvalidEvent(payload, f"event must be a JSON object, got {type(payload).__name__}")
    if org is not None:
        payload = {**payload, "org": org}
    try:
        event = CloudUsageEvent.model_validate(payload)
    except ValidationError as exc:
        return InvalidEvent(payload, _describe(exc))
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - defensive
        return InvalidEvent(payload, f"event could not be read: {exc}")
    return UsageEvent(
        org=event.org,
        customer=event.subject,
        feature=event.data.feature,
        source=event.source,
        id=event.id,
        time=event.time or received_at,
        quantity_micros=event.data.quantity,
        entitlement_id=event.data.entitlement_id,
        data=payload["data"],
    )
