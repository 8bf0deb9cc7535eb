"""The dead-letter store: events that were not counted, with why, for listing and replay.

Storing is idempotent: a record's fingerprint is (reason, org, source, id), or
its ``identity`` (an unreadable message's digest and task id), or the raw
payload for an event without a usable identity, so a redelivered
batch dead-letters each of its events once, even from two workers at once.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from meterd.storage.database import insert_ignoring_duplicates
from meterd.storage.models import DeadLetter


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    reason: str
    detail: str
    payload: Any
    org_id: str | None = None
    source: str | None = None
    event_id: str | None = None
    #: What identifies a letter without an event identity, if not its whole payload
    #: (an unreadable message: its body's digest and task id, not its headers).
    identity: str | None = None

    def fingerprint(self) -> str:
        if self.identity is not None:
            basis = json.dumps([self.reason, self.identity])
        elif self.source is not None and self.event_id is not None:
            basis = json.dumps([self.reason, self.org_id, self.source, self.event_id])
        else:
            basis = json.dumps([self.reason, _payload_text(self.payload)])
        return hashlib.sha256(basis.encode()).hexdigest()


def _payload_text(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=True, sort_keys=True, default=repr)


def _no_nul(text: str | None) -> str | None:
    return text.replace("\x00", "\\u0000") if text is not None else None


class DeadLetterStore:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.sessions = session_factory

    def add(self, records: Sequence[DeadLetterRecord], now: datetime) -> int:
        """Store dead letters; one already stored (same fingerprint) is skipped.
        Returns how many were new."""
        if not records:
            return 0
        by_print = {r.fingerprint(): r for r in records}
        with self.sessions.begin() as s:
            known = set(
                s.scalars(
                    select(DeadLetter.fingerprint).where(DeadLetter.fingerprint.in_(by_print))
                )
            )
            rows = [
                {
                    "id": uuid.uuid4(),
                    "fingerprint": fingerprint,
                    "org_id": r.org_id,
                    "reason": r.reason,
                    "detail": _no_nul(r.detail) or "",
                    "source": _no_nul(r.source),
                    "event_id": _no_nul(r.event_id),
                    "payload": _payload_text(r.payload),
                    "received_at": now,
                }
                for fingerprint, r in by_print.items()
                if fingerprint not in known
            ]
            if rows:
                # Two workers may dead-letter the same redelivered event at once.
                insert_ignoring_duplicates(s, DeadLetter, rows, ["fingerprint"])
        return len(by_print) - len(known)

    @staticmethod
    def _conditions(
        reason: str | None,
        org_id: str | None,
        since: datetime | None,
        until: datetime | None,
        replayed: bool | None,
    ) -> list[Any]:
        """``replayed``: None both, True only replayed letters, False only waiting ones."""
        conditions: list[Any] = []
        if reason:
            conditions.append(DeadLetter.reason == reason)
        if org_id:
            conditions.append(DeadLetter.org_id == org_id)
        if since:
            conditions.append(DeadLetter.received_at >= since)
        if until:
            conditions.append(DeadLetter.received_at < until)
        if replayed is True:
            conditions.append(DeadLetter.replayed_at.is_not(None))
        elif replayed is False:
            conditions.append(DeadLetter.replayed_at.is_(None))
        return conditions

    def find(
        self,
        *,
        reason: str | None = None,
        org_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        include_replayed: bool = False,
        limit: int = 100,
    ) -> list[DeadLetter]:
        conditions = self._conditions(
            reason, org_id, since, until, None if include_replayed else False
        )
        stmt = select(DeadLetter).where(and_(True, *conditions))
        with self.sessions() as s:
            return list(s.scalars(stmt.order_by(DeadLetter.received_at).limit(limit)))

    def get(self, dead_letter_id: uuid.UUID) -> DeadLetter | None:
        with self.sessions() as s:
            return s.get(DeadLetter, dead_letter_id)

    def count(
        self,
        *,
        reason: str | None = None,
        org_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        replayed: bool | None = None,
    ) -> int:
        conditions = self._conditions(reason, org_id, since, until, replayed)
        stmt = select(func.count()).select_from(DeadLetter).where(and_(True, *conditions))
        with self.sessions() as s:
            return int(s.scalar(stmt) or 0)

    def purge(
        self,
        *,
        reason: str | None = None,
        org_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        replayed: bool | None = True,
    ) -> int:
        """Delete matching letters (by default only those already replayed); returns
        how many. A purged letter cannot be replayed: its event is gone for good."""
        conditions = self._conditions(reason, org_id, since, until, replayed)
        with self.sessions.begin() as s:
            result = s.execute(delete(DeadLetter).where(and_(True, *conditions)))
            return int(getattr(result, "rowcount", 0))

    def count_by_reason(self) -> dict[str, int]:
        stmt = (
            select(DeadLetter.reason, func.count())
            .where(DeadLetter.replayed_at.is_(None))
            .group_by(DeadLetter.reason)
        )
        with self.sessions() as s:
            return {row[0]: row[1] for row in s.execute(stmt)}

    def mark_replayed(self, outcomes: dict[uuid.UUID, str], now: datetime) -> None:
        with self.sessions.begin() as s:
            for dl_id, outcome in outcomes.items():
                s.execute(
                    update(DeadLetter)
                    .where(DeadLetter.id == dl_id)
                    .values(replayed_at=now, replay_outcome=outcome)
                )

    def page(
        self,
        org_id: str,
        *,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
        include_replayed: bool = False,
    ) -> list[DeadLetter]:
        """The org's letters in (received_at, id) order, after ``after``."""
        conditions = self._conditions(None, org_id, None, None, None if include_replayed else False)
        if after is not None:
            at, last_id = after
            conditions.append(
                or_(
                    DeadLetter.received_at > at,
                    and_(DeadLetter.received_at == at, DeadLetter.id > last_id),
                )
            )
        stmt = select(DeadLetter).where(and_(True, *conditions))
        stmt = stmt.order_by(DeadLetter.received_at, DeadLetter.id).limit(limit)
        with self.sessions() as s:
            return list(s.scalars(stmt))

    def by_ids(self, ids: Sequence[uuid.UUID], org_id: str | None = None) -> list[DeadLetter]:
        """The letters of ``ids`` (of ``org_id`` only, if given), oldest first."""
        stmt = select(DeadLetter).where(DeadLetter.id.in_(list(ids)))
        if org_id is not None:
            stmt = stmt.where(DeadLetter.org_id == org_id)
        with self.sessions() as s:
            return list(s.scalars(stmt.order_by(DeadLetter.received_at, DeadLetter.id)))

    def ids(self, org_id: str | None = None) -> list[uuid.UUID]:
        """The ids of the letters (of ``org_id``, if given): for matching an id prefix."""
        stmt = select(DeadLetter.id)
        if org_id is not None:
            stmt = stmt.where(DeadLetter.org_id == org_id)
        with self.sessions() as s:
            return list(s.scalars(stmt))
