"""The notifications table: an outbox written in the transaction of what it announces.

``insert_notifications`` runs inside the usage store's flush and the transition store's
transactions. ``NotificationStore`` is the dispatcher's side: claim what is due
for publishing (a lease, so a notification whose consumer died is published
again) and record how each webhook delivery went.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.notifications import Delivery, NewNotification
from meterd.storage.database import bulk_insert, insert_ignoring_duplicates
from meterd.storage.models import Notification, Organisation


def insert_notifications(
    s: Session, notes: Sequence[NewNotification], now: datetime, *, fresh: bool = False
) -> None:
    """Insert notifications, due for publishing at once; an id already present is
    left alone, so recording the same fact twice is harmless. ``fresh``: the ids are
    new for sure (derived from rows this transaction inserts), so the fast path is safe."""
    if not notes:
        return
    rows = [
        {
            "id": n.payload["id"],
            "org_id": n.payload["org"],
            "entitlement_id": n.entitlement_id,
            "type": n.payload["type"],
            "payload": json.dumps(n.payload, separators=(",", ":")),
            "occurred_at": n.occurred_at,
            "created_at": now,
            "due_at": now,
            "delivery": Delivery.PENDING.value,
            "attempts": 0,
        }
        for n in notes
    ]
    if fresh:
        bulk_insert(s, Notification, rows)
    else:
        insert_ignoring_duplicates(s, Notification, rows, ["id"])


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    secret: str | None


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    notification_id: str
    delivery: Delivery
    error: str | None = None


class NotificationStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[dict[str, Any]]:
        """Payloads of up to ``limit`` notifications due for publishing, oldest first;
        each is leased: due again at ``now + lease`` unless a delivery is recorded.
        On PostgreSQL rows another dispatcher holds are skipped (SKIP LOCKED); on
        SQLite writers are serialised anyway."""
        with self.sessions.begin() as s:
            stmt = (
                select(Notification.id, Notification.payload)
                .where(Notification.due_at <= now)
                .order_by(Notification.due_at)
                .limit(limit)
            )
            if s.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            rows = s.execute(stmt).all()
            if rows:
                s.execute(
                    update(Notification)
                    .where(Notification.id.in_([r.id for r in rows]))
                    .values(due_at=now + lease)
                    .execution_options(synchronize_session=False)
                )
        return [json.loads(r.payload) for r in rows]

    def webhooks(self, org_ids: Sequence[str]) -> dict[str, Webhook]:
        with self.sessions() as s:
            rows = s.execute(
                select(
                    Organisation.id, Organisation.webhook_url, Organisation.webhook_secret
                ).where(Organisation.id.in_(set(org_ids)), Organisation.webhook_url.is_not(None))
            ).all()
        return {r.id: Webhook(r.webhook_url, r.webhook_secret) for r in rows}

    def pending_ids(self, ids: Sequence[str]) -> set[str]:
        """Of ``ids``, the ones still waiting for delivery (a redelivered task skips
        what an earlier attempt delivered)."""
        with self.sessions() as s:
            return set(
                s.scalars(
                    select(Notification.id).where(
                        Notification.id.in_(list(ids)),
                        Notification.delivery == Delivery.PENDING.value,
                    )
                )
            )

    def record(
        self,
        results: Sequence[DeliveryResult],
        now: datetime,
        *,
        backoff: Callable[[int], timedelta | None],
    ) -> None:
        """Record delivery results. A failed call is due again after ``backoff(attempts)``
        (a timedelta), or marked FAILED when that returns None."""
        if not results:
            return
        with self.sessions.begin() as s:
            attempts = {
                row.id: row.attempts
                for row in s.execute(
                    select(Notification.id, Notification.attempts).where(
                        Notification.id.in_([r.notification_id for r in results])
                    )
                )
            }
            for result in results:
                if result.notification_id not in attempts:
                    continue
                values: dict[str, Any]
                if result.delivery is Delivery.PENDING:  # a failed attempt
                    tried = attempts[result.notification_id] + 1
                    wait = backoff(tried)
                    values = {
                        "attempts": tried,
                        "last_error": result.error,
                        "due_at": now + wait if wait is not None else None,
                        "delivery": Delivery.PENDING.value
                        if wait is not None
                        else Delivery.FAILED.value,
                    }
                else:
                    values = {
                        "delivery": result.delivery.value,
                        "due_at": None,
                        "delivered_at": now if result.delivery is Delivery.DELIVERED else None,
                        "attempts": attempts[result.notification_id]
                        + (result.delivery is Delivery.DELIVERED),
                    }
                s.execute(
                    update(Notification)
                    .where(Notification.id == result.notification_id)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )

    def all_for(self, entitlement_id: uuid.UUID) -> list[Notification]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(Notification)
                    .where(Notification.entitlement_id == entitlement_id)
                    .order_by(Notification.occurred_at, Notification.id)
                )
            )

    def set_webhook(self, org_id: str, url: str | None, secret: str | None) -> bool:
        with self.sessions.begin() as s:
            result = s.execute(
                update(Organisation)
                .where(Organisation.id == org_id)
                .values(webhook_url=url, webhook_secret=secret)
            )
            return bool(getattr(result, "rowcount", 0) == 1)
