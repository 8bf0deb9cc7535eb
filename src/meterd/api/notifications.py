"""The org's notifications and their webhook deliveries (``WEBHOOKS:MANAGE``).

``GET /v1/notifications`` lists them newest first (opaque cursor, ``status`` and
``entitlement_id`` filters), each with one delivery per endpoint and its
attempts (time, HTTP status or error, duration): the first and the latest, at
most ``KEPT_ATTEMPTS`` (20) of them, and ``total_attempts`` counting every call.
``POST /v1/notifications/{id}/redeliver`` queues one again to every live
endpoint; while it is pending the call changes nothing (``queued`` false).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from meterd.api.auth import RuntimeDep, require
from meterd.api.exact_json import ExactJSONRoute
from meterd.api.inputs import RequestBody
from meterd.config import redact_url
from meterd.core.paging import Cursor, CursorError, decode, encode
from meterd.core.timeutil import as_utc, isoformat, isoformat_or_none, utcnow
from meterd.services.api_keys import Permission, Principal
from meterd.services.notify import DeliveryView, NotificationView

router = APIRouter(prefix="/v1", tags=["webhooks"], route_class=ExactJSONRoute)

Manager = Annotated[Principal, Depends(require(Permission.WEBHOOKS_MANAGE))]
NotificationId = Annotated[
    str, Path(max_length=64, pattern=r"^ntf_[a-z]+_[0-9a-f]+$", description="ntf_...")
]
_SORT = "created_at:desc"
#: The cursor's row id: notification ids are not UUIDs, so the boundary row's id
#: travels in the value, after its created_at.
_NIL = str(uuid.UUID(int=0))


class AttemptOut(BaseModel):
    number: int
    at: str
    status_code: int | None = Field(description="the HTTP status; null: no answer")
    error: str | None = Field(description="why it failed (a refused target included)")
    duration_ms: int


class DeliveryOut(BaseModel):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    status: str = Field(description="pending, delivered, failed or cancelled")
    attempts: int = Field(description="calls since it was last queued")
    total_attempts: int = Field(
        description="every call over its life, redeliveries included; history may keep fewer"
    )
    next_attempt_at: str | None
    delivered_at: str | None
    last_error: str | None
    history: list[AttemptOut] = Field(
        description="the first call and the latest ones (at most 20 in all), oldest first"
    )


class NotificationOut(BaseModel):
    id: str
    type: str
    entitlement_id: uuid.UUID
    occurred_at: str
    created_at: str
    status: str = Field(description="pending, delivered, failed or no_webhook")
    payload: Any = Field(description="the body POSTed")
    deliveries: list[DeliveryOut]


class NotificationPage(BaseModel):
    data: list[NotificationOut]
    next: str | None = Field(description="the cursor of the next page; null: the last page")


class RedeliverIn(RequestBody):
    """No fields: an unknown one is refused, as on every write route."""


class RedeliverOut(BaseModel):
    queued: bool = Field(description="false: it was still pending, nothing changed")
    notification: NotificationOut


def delivery_out(d: DeliveryView) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        endpoint_id=d.endpoint_id,
        url=redact_url(d.url),
        status=d.status,
        attempts=d.attempts,
        total_attempts=d.total_attempts,
        next_attempt_at=isoformat_or_none(d.due_at) if d.status == "pending" else None,
        delivered_at=isoformat_or_none(d.delivered_at),
        last_error=d.last_error,
        history=[
            AttemptOut(
                number=a.number,
                at=isoformat(a.at),
                status_code=a.status_code,
                error=a.error,
                duration_ms=a.duration_ms,
            )
            for a in d.tries
        ],
    )


def notification_out(v: NotificationView) -> NotificationOut:
    import json

    n = v.notification
    return NotificationOut(
        id=n.id,
        type=n.type,
        entitlement_id=n.entitlement_id,
        occurred_at=isoformat(n.occurred_at),
        created_at=isoformat(n.created_at),
        status=n.delivery,
        payload=json.loads(n.payload),
        deliveries=[delivery_out(d) for d in v.deliveries],
    )


def _boundary(cursor: str) -> tuple[datetime, str]:
    raw = decode(cursor, _SORT, str).value
    at, _, note_id = raw.partition(" ")
    try:
        return as_utc(datetime.fromisoformat(at)), note_id
    except (ValueError, OverflowError):
        raise CursorError("the cursor is not valid: pass back a next value") from None


@router.get("/notifications", response_model=NotificationPage)
def list_notifications(
    runtime: RuntimeDep,
    caller: Manager,
    status: Literal["pending", "delivered", "failed", "no_webhook"] | None = None,
    entitlement_id: uuid.UUID | None = None,
    cursor: Annotated[
        str | None, Query(max_length=2000, description="a next value this route gave")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> NotificationPage:
    """The org's notifications, newest first, with their deliveries and attempts."""
    before = _boundary(cursor) if cursor else None
    views = runtime.notifications.page(
        caller.org, status=status, entitlement_id=entitlement_id, before=before, limit=limit + 1
    )
    shown = views[:limit]
    next_cursor = None
    if len(views) > limit and shown:
        last = shown[-1].notification
        value = f"{last.created_at.isoformat()} {last.id}"
        next_cursor = encode(Cursor(_SORT, value, _NIL, True))
    return NotificationPage(data=[notification_out(v) for v in shown], next=next_cursor)


@router.get("/notifications/{notification_id}", response_model=NotificationOut)
def get_notification(
    notification_id: NotificationId, runtime: RuntimeDep, caller: Manager
) -> NotificationOut:
    return notification_out(runtime.notifications.one(caller.org, notification_id))


@router.post("/notifications/{notification_id}/redeliver", response_model=RedeliverOut)
def redeliver(
    notification_id: NotificationId,
    runtime: RuntimeDep,
    caller: Manager,
    body: RedeliverIn | None = None,
) -> RedeliverOut:
    """Queue the notification again to every live endpoint of the org (404: no such
    notification of the org; 409: the org has no endpoint)."""
    queued = runtime.notifications.redeliver(caller.org, notification_id, utcnow())
    return RedeliverOut(
        queued=queued,
        notification=notification_out(runtime.notifications.one(caller.org, notification_id)),
    )
