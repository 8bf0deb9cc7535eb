"""The notifications table: an outbox written in the transaction of what it announces.

``insert_notifications`` runs inside the usage store's flush and the transition store's
transactions. ``NotificationStore`` is the dispatcher's side: claim what is due
for publishing (a lease, so a notification whose consumer died is published
again); its ``endpoints`` (``meterd.storage.webhooks``) fan each notification
out to the org's webhook endpoints and record how each delivery went.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.notifications import Delivery, NewNotification
from meterd.core.timeutil import utcnow
from meterd.storage.database import bulk_insert, insert_ignoring_duplicates
from meterd.storage.models import Notification
from meterd.storage.webhooks import WebhookStore

#: Standard Webhooks secrets: this prefix, then base64 of the HMAC key.
SECRET_PREFIX = "whsec_"


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
    """Where one delivery goes: the endpoint's URL and its ``whsec_`` secret."""

    url: str
    secret: str


class NotificationStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        #: The org's endpoints and the delivery log of each notification.
        self.endpoints = WebhookStore(sessions)

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

    def statuses(self, ids: Sequence[str]) -> dict[str, str]:
        """Where the delivery of each of ``ids`` stands."""
        with self.sessions() as s:
            return {
                r.id: r.delivery
                for r in s.execute(
                    select(Notification.id, Notification.delivery).where(
                        Notification.id.in_(list(ids))
                    )
                )
            }

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
        """The shortcut of before: the org's endpoints become the one of ``url`` (none
        if None). A ``whsec_`` secret is kept; another string is used as the HMAC key
        bytes (as the migration of the org webhooks did); None: a new random one.
        False if there is no such org."""
        if url is None:
            stored = None
        elif secret is None:
            stored = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
        elif secret.startswith(SECRET_PREFIX):
            stored = secret
        else:
            stored = SECRET_PREFIX + base64.b64encode(secret.encode()).decode()
        return self.endpoints.replace_endpoints(org_id, url, stored, utcnow())
