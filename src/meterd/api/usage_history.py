"""Usage over time and the events behind it: ``GET /v1/usage`` (usage per local
hour, day or month, from the quarter-hour rollups) and ``GET /v1/events`` (the
event log's parts of a customer's events, by cursor pages: "explain my bill").

Both read what the flush wrote, so they are at most one flush interval behind
the real-time value. Quantities are exact decimal strings. ``POST /v1/events``
(intake) is in ``meterd.api.usage``: same path, another method.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from meterd.api.auth import RuntimeDep, require
from meterd.api.exact_json import ExactJSONRoute
from meterd.core.domain import CUSTOMER_ID_MAX, FEATURE_KEY_PATTERN, PRINTABLE_PATTERN
from meterd.core.errors import InvalidError
from meterd.core.quantity import format_quantity
from meterd.core.timeutil import isoformat
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission, Principal
from meterd.services.usage_report import (
    MAX_PAGE,
    GroupBy,
    LoggedEventView,
    UsageRow,
    Window,
    counted_range,
    parse_group_by,
    time_zone,
)

router = APIRouter(prefix="/v1", tags=["usage history"], route_class=ExactJSONRoute)

Viewer = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_VIEW))]

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_MOMENT = {"format": "date-time"}


def rfc3339(text: str, name: str) -> datetime:
    """An RFC 3339 date-time with its offset (``2026-11-22T10:00:00Z``,
    ``2026-11-22T11:00:00+01:00``); fractions past microseconds are truncated."""
    if not _RFC3339.fullmatch(text):
        raise InvalidError(
            f"{name}: {text[:60]!r} is not an RFC 3339 date-time with a time zone, "
            "e.g. 2026-11-22T10:00:00Z"
        )
    try:
        return datetime.fromisoformat(text.upper())
    except ValueError:
        raise InvalidError(f"{name}: {text[:60]!r} is not a valid date-time") from None


CustomerQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=CUSTOMER_ID_MAX,
        pattern=PRINTABLE_PATTERN,
        description="one customer (default: every customer of the org)",
    ),
]
FeatureQuery = Annotated[
    str | None,
    Query(pattern=FEATURE_KEY_PATTERN.pattern, description="one feature (default: every one)"),
]
From = Annotated[
    str,
    Query(
        alias="from",
        max_length=40,
        json_schema_extra=_MOMENT,
        description="RFC 3339 with a time zone; inclusive",
    ),
]
To = Annotated[
    str,
    Query(
        alias="to",
        max_length=40,
        json_schema_extra=_MOMENT,
        description="RFC 3339 with a time zone; exclusive",
    ),
]


class UsageWindow(BaseModel):
    window_start: str = Field(description="RFC 3339 in the requested time zone")
    window_end: str
    customer_id: str | None = Field(
        default=None, description="only when grouped by customer or entitlement"
    )
    feature: str | None = Field(
        default=None, description="only when grouped by feature or entitlement"
    )
    entitlement_id: uuid.UUID | None = Field(
        default=None, description="only when grouped by entitlement"
    )
    quantity: str = Field(description="exact decimal")
    events: int = Field(description="event parts counted")
    filters: dict[str, Any] | None = Field(
        default=None,
        description="grouped by entitlement: its dimension filters, if it has any",
    )


class UsageHistory(BaseModel):
    window: Window
    tz: str
    from_: str = Field(alias="from", description="the range counted: from, down to a quarter hour")
    to: str = Field(description="the range counted: to, up to a quarter hour")
    data: list[UsageWindow]


def usage_window(row: UsageRow) -> UsageWindow:
    return UsageWindow(
        window_start=row.window_start.isoformat(),
        window_end=row.window_end.isoformat(),
        customer_id=row.customer_id,
        feature=row.feature,
        entitlement_id=row.entitlement_id,
        quantity=format_quantity(row.quantity),
        events=row.events,
        filters=dict(row.filters) if row.filters else None,
    )


@router.get("/usage", response_model=UsageHistory, response_model_exclude_none=True)
def get_usage(
    runtime: RuntimeDep,
    caller: Viewer,
    start: From,
    end: To,
    customer_id: CustomerQuery = None,
    feature: FeatureQuery = None,
    window: Annotated[Window, Query(description="HOUR, DAY or MONTH of the local calendar")] = (
        Window.DAY
    ),
    tz: Annotated[
        str, Query(max_length=64, description="IANA time zone of the windows, e.g. Europe/Paris")
    ] = "UTC",
    group_by: Annotated[
        str | None,
        Query(
            max_length=100,
            description="comma-separated: customer, feature, entitlement (default: none)",
        ),
    ] = None,
) -> UsageHistory:
    """Usage per window of the local calendar of ``tz``, from the flushed usage.

    Usage is counted per quarter hour of event time: ``from`` is rounded down and
    ``to`` up to a quarter hour, and the answer's ``from``/``to`` are the range
    counted. The first and last windows are clipped to it; windows without usage
    are left out. A range of more than 10,000 windows is a 400."""
    return usage_history(
        runtime,
        caller.org,
        customer=customer_id,
        feature=feature,
        start=start,
        end=end,
        window=window,
        tz=tz,
        group_by=parse_group_by(group_by),
    )


def usage_history(
    runtime: Runtime,
    org: str,
    *,
    customer: str | None,
    feature: str | None,
    start: str,
    end: str,
    window: Window,
    tz: str,
    group_by: list[GroupBy],
) -> UsageHistory:
    """The answer of ``GET /v1/usage`` (and of the portal's usage, its customer fixed
    by the token): the range counted, read from the rollups, in ``tz``."""
    zone = time_zone(tz)
    first, last = counted_range(rfc3339(start, "from"), rfc3339(end, "to"))
    rows = runtime.usage_report.usage(
        org,
        customer=customer,
        feature=feature,
        start=first,
        end=last,
        window=window,
        tz=zone,
        group_by=group_by,
    )
    return UsageHistory.model_validate(
        {
            "window": window,
            "tz": zone.key,
            "from": first.astimezone(zone).isoformat(),
            "to": last.astimezone(zone).isoformat(),
            "data": [usage_window(r) for r in rows],
        }
    )


class EventCorrection(BaseModel):
    of: str = Field(description="the corrected event's id (or its item's)")
    number: int = Field(description="1, 2, ...: the corrections of that id in order")


class LoggedEvent(BaseModel):
    source: str
    id: str
    time: str = Field(description="the event's time (UTC)")
    customer_id: str
    feature: str
    entitlement_id: uuid.UUID = Field(description="where this part was counted")
    period_start: str = Field(description="the period it was counted in")
    quantity: str = Field(description="this part's quantity, exact")
    event_quantity: str = Field(description="the whole event's quantity, exact")
    part: int = Field(description="0, 1, ...: the burn-down split the event over entitlements")
    received_at: str
    data: Any = Field(default=None, description="the event's data (part 0 only)")
    correction: EventCorrection | None = Field(
        default=None,
        description="set on a correction's rows (void, amend): the corrected id and the"
        " correction's number; who, when and why are in data.correction (part 0)",
    )


class EventsPage(BaseModel):
    data: list[LoggedEvent]
    next: str | None = Field(description="the cursor of the next page; null: the last page")


def logged_event(view: LoggedEventView) -> LoggedEvent:
    return LoggedEvent(
        source=view.source,
        id=view.id,
        time=isoformat(view.time),
        customer_id=view.customer_id,
        feature=view.feature,
        entitlement_id=view.entitlement_id,
        period_start=isoformat(view.period_start),
        quantity=format_quantity(view.quantity),
        event_quantity=format_quantity(view.event_quantity),
        part=view.part,
        received_at=isoformat(view.received_at),
        data=view.data,
        correction=(
            EventCorrection(of=view.correction[0], number=view.correction[1])
            if view.correction
            else None
        ),
    )


@router.get("/events", response_model=EventsPage)
def get_events(
    runtime: RuntimeDep,
    caller: Viewer,
    customer_id: Annotated[
        str, Query(min_length=1, max_length=CUSTOMER_ID_MAX, pattern=PRINTABLE_PATTERN)
    ],
    start: From,
    end: To,
    feature: FeatureQuery = None,
    cursor: Annotated[
        str | None, Query(max_length=8000, description="a next value this route gave")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> EventsPage:
    """The customer's counted events with ``from <= time < to``, oldest first, each
    part of an event the burn-down split over entitlements on its own row: the
    events behind the usage (and the bill). Pages by opaque cursor (``next``)."""
    page = runtime.usage_report.events(
        caller.org,
        customer_id,
        feature=feature,
        start=rfc3339(start, "from"),
        end=rfc3339(end, "to"),
        cursor=cursor,
        limit=limit,
    )
    return EventsPage(data=[logged_event(e) for e in page.events], next=page.next_cursor)
