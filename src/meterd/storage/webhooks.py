"""Webhook endpoints and the delivery log (see ``models/webhooks``).

A notification fans out, the first time the ``meterd.notify`` task handles it,
into one delivery per live endpoint of its org; each delivery has its own
attempts, backoff and outcome, and the notification row sums them up: pending
while one is (``due_at`` the earliest of theirs), else failed if one failed,
else delivered; ``no_webhook`` when the org had no endpoint.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.errors import ConflictError, NotFoundError
from meterd.core.notifications import Delivery
from meterd.storage.database import insert_ignoring_duplicates
from meterd.storage.models import (
    Notification,
    Organisation,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

PENDING, DELIVERED, FAILED, CANCELLED = "pending", "delivered", "failed", "cancelled"

#: Attempt rows kept per delivery: the first call and the latest ones. Every call is
#: numbered over the delivery's life, so the total stays known (the last number)
#: while a receiver that stays down, redelivered again and again, adds no rows past it.
KEPT_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: uuid.UUID
    notification_id: str
    endpoint_id: uuid.UUID
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class AttemptResult:
    delivery_id: uuid.UUID
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int


@dataclass(slots=True)
class DeliveryView:
    id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    status: str
    attempts: int
    due_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    #: The kept attempts, oldest first: the first call and the latest (KEPT_ATTEMPTS).
    tries: list[WebhookAttempt] = field(default_factory=list)

    @property
    def total_attempts(self) -> int:
        """Every call over the delivery's life, redeliveries included (the kept ones
        may be fewer): the number of the latest, which is always kept."""
        return max((a.number for a in self.tries), default=0)


@dataclass(slots=True)
class NotificationView:
    notification: Notification
    deliveries: list[DeliveryView]


class WebhookStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # -- endpoints ------------------------------------------------------------------

    def add_endpoint(
        self, org_id: str, url: str, secret: str, now: datetime, *, cap: int
    ) -> WebhookEndpoint:
        """A new live endpoint of the org; ConflictError if it has ``cap`` already,
        NotFoundError if there is no such org. The count and the insert run under
        the org's lock (``lock_org``), so racing calls never pass the cap."""
        with self.sessions.begin() as s:
            if not self.lock_org(s, org_id):
                raise NotFoundError("organisation", org_id)
            live = s.scalar(
                select(func.count())
                .select_from(WebhookEndpoint)
                .where(WebhookEndpoint.org_id == org_id, WebhookEndpoint.deleted_at.is_(None))
            )
            if (live or 0) >= cap:
                raise ConflictError(f"an organisation has at most {cap} webhook endpoints")
            row = WebhookEndpoint(
                id=uuid.uuid4(), org_id=org_id, url=url, secret=secret, created_at=now
            )
            s.add(row)
            s.flush()
            s.expunge(row)
        return row

    def endpoints(self, org_id: str) -> list[WebhookEndpoint]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(WebhookEndpoint)
                    .where(WebhookEndpoint.org_id == org_id, WebhookEndpoint.deleted_at.is_(None))
                    .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
                )
            )

    def remove_endpoint(self, org_id: str, endpoint_id: uuid.UUID, now: datetime) -> bool:
        """Remove a live endpoint of the org (False: none such); its pending deliveries
        are cancelled."""
        with self.sessions.begin() as s:
            return self._remove(s, org_id, [endpoint_id], now) == 1

    def replace_endpoints(
        self, org_id: str, url: str | None, secret: str | None, now: datetime
    ) -> bool:
        """The org's endpoints become the one of ``url`` (none if None); False if there
        is no such org."""
        with self.sessions.begin() as s:
            if not self.lock_org(s, org_id):
                return False
            live = s.scalars(
                select(WebhookEndpoint.id).where(
                    WebhookEndpoint.org_id == org_id, WebhookEndpoint.deleted_at.is_(None)
                )
            ).all()
            self._remove(s, org_id, list(live), now)
            if url is not None and secret is not None:
                s.add(
                    WebhookEndpoint(
                        id=uuid.uuid4(), org_id=org_id, url=url, secret=secret, created_at=now
                    )
                )
        return True

    @staticmethod
    def lock_org(s: Session, org_id: str) -> bool:
        """Take the lock that serialises changes to an org's endpoints, first thing in
        the transaction; False if there is no such org. PostgreSQL: ``SELECT ... FOR
        UPDATE`` of the organisation row (a second caller waits, in any process).
        SQLite: a write that changes nothing takes the database's one write lock
        before anything is read (a read first would be outside it, and the later
        write would fail, not wait). As ``AllotmentStore.lock_parent`` does."""
        if s.get_bind().dialect.name == "postgresql":
            found = s.scalar(
                select(Organisation.id).where(Organisation.id == org_id).with_for_update()
            )
            return found is not None
        result = s.execute(
            update(Organisation)
            .where(Organisation.id == org_id)
            .values(name=Organisation.name)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0)) == 1

    @staticmethod
    def _remove(s: Session, org_id: str, ids: list[uuid.UUID], now: datetime) -> int:
        if not ids:
            return 0
        result = s.execute(
            update(WebhookEndpoint)
            .where(
                WebhookEndpoint.org_id == org_id,
                WebhookEndpoint.id.in_(ids),
                WebhookEndpoint.deleted_at.is_(None),
            )
            .values(deleted_at=now)
            .execution_options(synchronize_session=False)
        )
        s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id.in_(ids), WebhookDelivery.status == PENDING)
            .values(status=CANCELLED, due_at=None)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0))

    # -- delivery -------------------------------------------------------------------

    def due(self, notes: Sequence[tuple[str, str]], now: datetime) -> list[DueDelivery]:
        """The deliveries of ``notes`` (id, org) due at ``now``; a notification with no
        delivery yet gets one per live endpoint of its org first."""
        if not notes:
            return []
        ids = [n for n, _ in notes]
        with self.sessions.begin() as s:
            started = set(
                s.scalars(
                    select(WebhookDelivery.notification_id)
                    .where(WebhookDelivery.notification_id.in_(ids))
                    .distinct()
                )
            )
            fresh = [(n, org) for n, org in notes if n not in started]
            if fresh:
                endpoints = s.execute(
                    select(WebhookEndpoint.id, WebhookEndpoint.org_id).where(
                        WebhookEndpoint.org_id.in_({org for _, org in fresh}),
                        WebhookEndpoint.deleted_at.is_(None),
                    )
                ).all()
                rows = [
                    {
                        "id": uuid.uuid4(),
                        "notification_id": n,
                        "endpoint_id": e.id,
                        "org_id": org,
                        "status": PENDING,
                        "attempts": 0,
                        "due_at": now,
                    }
                    for n, org in fresh
                    for e in endpoints
                    if e.org_id == org
                ]
                insert_ignoring_duplicates(
                    s, WebhookDelivery, rows, ["notification_id", "endpoint_id"]
                )
            found = s.execute(
                select(
                    WebhookDelivery.id,
                    WebhookDelivery.notification_id,
                    WebhookDelivery.endpoint_id,
                    WebhookEndpoint.url,
                    WebhookEndpoint.secret,
                )
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(
                    WebhookDelivery.notification_id.in_(ids),
                    WebhookDelivery.status == PENDING,
                    WebhookDelivery.due_at <= now,
                    WebhookEndpoint.deleted_at.is_(None),
                )
                .order_by(WebhookDelivery.notification_id, WebhookEndpoint.created_at)
            ).all()
        return [DueDelivery(r.id, r.notification_id, r.endpoint_id, r.url, r.secret) for r in found]

    def record(
        self,
        notification_ids: Sequence[str],
        results: Sequence[AttemptResult],
        now: datetime,
        *,
        backoff: Callable[[int], timedelta | None],
    ) -> None:
        """Record the attempts, then sum each notification of ``notification_ids`` up."""
        with self.sessions.begin() as s:
            if results:
                by_id = {r.delivery_id: r for r in results}
                rows = s.execute(
                    select(
                        WebhookDelivery.id,
                        WebhookDelivery.attempts,
                        func.coalesce(func.max(WebhookAttempt.number), 0).label("last"),
                    )
                    .outerjoin(WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id)
                    .where(WebhookDelivery.id.in_(list(by_id)))
                    .group_by(WebhookDelivery.id, WebhookDelivery.attempts)
                ).all()
                attempts = []
                for row in rows:
                    result = by_id[row.id]
                    attempts.append(
                        {
                            "delivery_id": row.id,
                            "number": row.last + 1,
                            "at": now,
                            "status_code": result.status_code,
                            "error": result.error,
                            "duration_ms": result.duration_ms,
                        }
                    )
                    tried = row.attempts + 1
                    values: dict[str, Any]
                    if result.ok:
                        values = {"status": DELIVERED, "due_at": None, "delivered_at": now}
                    else:
                        wait = backoff(tried)
                        values = {
                            "status": PENDING if wait is not None else FAILED,
                            "due_at": now + wait if wait is not None else None,
                        }
                    s.execute(
                        update(WebhookDelivery)
                        .where(WebhookDelivery.id == row.id, WebhookDelivery.status == PENDING)
                        .values(attempts=tried, last_error=result.error, **values)
                        .execution_options(synchronize_session=False)
                    )
                insert_ignoring_duplicates(s, WebhookAttempt, attempts, ["delivery_id", "number"])
                self._prune(s, [a["delivery_id"] for a in attempts if a["number"] > KEPT_ATTEMPTS])
            self._sum_up(s, notification_ids, now)

    @staticmethod
    def _prune(s: Session, delivery_ids: list[uuid.UUID]) -> None:
        """Keep KEPT_ATTEMPTS attempt rows of each delivery: its first call (when and
        how it started failing) and the latest ones; the ones between go."""
        if not delivery_ids:
            return
        kept = WebhookAttempt.__table__.alias("kept")
        latest = (
            select(func.max(kept.c.number))
            .where(kept.c.delivery_id == WebhookAttempt.delivery_id)
            .scalar_subquery()
        )
        s.execute(
            delete(WebhookAttempt)
            .where(
                WebhookAttempt.delivery_id.in_(delivery_ids),
                WebhookAttempt.number > 1,
                WebhookAttempt.number <= latest - (KEPT_ATTEMPTS - 1),
            )
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def _sum_up(s: Session, notification_ids: Sequence[str], now: datetime) -> None:
        deliveries: dict[str, list[Any]] = {n: [] for n in notification_ids}
        for row in s.execute(
            select(
                WebhookDelivery.notification_id,
                WebhookDelivery.status,
                WebhookDelivery.attempts,
                WebhookDelivery.due_at,
                WebhookDelivery.last_error,
                WebhookDelivery.delivered_at,
            ).where(WebhookDelivery.notification_id.in_(list(notification_ids)))
        ):
            deliveries[row.notification_id].append(row)
        for note_id, rows in deliveries.items():
            values: dict[str, Any]
            if not rows:
                values = {"delivery": Delivery.NO_WEBHOOK.value, "due_at": None}
            else:
                pending = [r for r in rows if r.status == PENDING]
                errors = [r.last_error for r in rows if r.last_error and r.status != DELIVERED]
                values = {
                    "attempts": max(r.attempts for r in rows),
                    "last_error": errors[-1] if errors else None,
                }
                if pending:
                    values["delivery"] = Delivery.PENDING.value
                    values["due_at"] = min(r.due_at or now for r in pending)
                elif any(r.status == FAILED for r in rows):
                    values["delivery"] = Delivery.FAILED.value
                    values["due_at"] = None
                else:
                    values["delivery"] = Delivery.DELIVERED.value
                    values["due_at"] = None
                    values["delivered_at"] = max(
                        (r.delivered_at for r in rows if r.delivered_at), default=now
                    )
            s.execute(
                update(Notification)
                .where(Notification.id == note_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def redeliver(self, org_id: str, notification_id: str, now: datetime) -> bool:
        """Queue a notification of the org again to each live endpoint (one that was
        added since gets it too); True if queued, False if it was still pending (then
        nothing changes). NotFoundError: no such notification of the org;
        ConflictError: the org has no endpoint."""
        with self.sessions.begin() as s:
            note = s.execute(
                select(Notification.id, Notification.delivery)
                .where(Notification.id == notification_id, Notification.org_id == org_id)
                .with_for_update()
            ).first()
            if note is None:
                raise NotFoundError("notification", notification_id)
            if note.delivery == Delivery.PENDING.value:
                return False
            live = s.scalars(
                select(WebhookEndpoint.id).where(
                    WebhookEndpoint.org_id == org_id, WebhookEndpoint.deleted_at.is_(None)
                )
            ).all()
            if not live:
                raise ConflictError("the organisation has no webhook endpoint to deliver to")
            insert_ignoring_duplicates(
                s,
                WebhookDelivery,
                [
                    {
                        "id": uuid.uuid4(),
                        "notification_id": notification_id,
                        "endpoint_id": e,
                        "org_id": org_id,
                        "status": PENDING,
                        "attempts": 0,
                        "due_at": now,
                    }
                    for e in live
                ],
                ["notification_id", "endpoint_id"],
            )
            s.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.notification_id == notification_id,
                    WebhookDelivery.endpoint_id.in_(list(live)),
                )
                .values(status=PENDING, attempts=0, due_at=now, delivered_at=None)
                .execution_options(synchronize_session=False)
            )
            s.execute(
                update(Notification)
                .where(Notification.id == notification_id)
                .values(delivery=Delivery.PENDING.value, due_at=now, attempts=0)
                .execution_options(synchronize_session=False)
            )
        return True

    # -- the log --------------------------------------------------------------------

    def page(
        self,
        org_id: str,
        *,
        status: str | None,
        entitlement_id: uuid.UUID | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[NotificationView]:
        """The org's notifications, newest first (created_at, id), each with its
        deliveries and their attempts."""
        stmt = select(Notification).where(Notification.org_id == org_id)
        if status is not None:
            stmt = stmt.where(Notification.delivery == status)
        if entitlement_id is not None:
            stmt = stmt.where(Notification.entitlement_id == entitlement_id)
        if before is not None:
            at, last = before
            stmt = stmt.where(
                or_(
                    Notification.created_at < at,
                    and_(Notification.created_at == at, Notification.id < last),
                )
            )
        stmt = stmt.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit)
        with self.sessions() as s:
            notes = list(s.scalars(stmt))
            return self._views(s, notes)

    def one(self, org_id: str, notification_id: str) -> NotificationView:
        with self.sessions() as s:
            note = s.scalars(
                select(Notification).where(
                    Notification.id == notification_id, Notification.org_id == org_id
                )
            ).first()
            if note is None:
                raise NotFoundError("notification", notification_id)
            return self._views(s, [note])[0]

    @staticmethod
    def _views(s: Session, notes: list[Notification]) -> list[NotificationView]:
        ids = [n.id for n in notes]
        views = {n.id: NotificationView(n, []) for n in notes}
        if not ids:
            return []
        deliveries: dict[uuid.UUID, DeliveryView] = {}
        for d, url in s.execute(
            select(WebhookDelivery, WebhookEndpoint.url)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.notification_id.in_(ids))
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        ):
            view = DeliveryView(
                d.id,
                d.endpoint_id,
                url,
                d.status,
                d.attempts,
                d.due_at,
                d.delivered_at,
                d.last_error,
            )
            deliveries[d.id] = view
            views[d.notification_id].deliveries.append(view)
        if deliveries:
            for attempt in s.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id.in_(list(deliveries)))
                .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
            ):
                deliveries[attempt.delivery_id].tries.append(attempt)
        s.expunge_all()
        return [views[i] for i in ids]
