"""The event log: every accepted event, durably, behind one interface.

The flush appends a batch's events in the transaction that adds their counts
(``UsageStore.apply_flush_batch``), with the quarter-hour usage rollups; ingest
searches it for events whose dedupe marker may be gone; the API reads it
("explain my bill") and the rollups (usage over time).

PostgreSQL: ``event_log`` is partitioned by event time, a partition a day,
written with COPY; ``maintain`` creates partitions ahead and drops the ones past
the retention (a DROP, no vacuum). SQLite: one plain table, old rows deleted.

This class is the line a column store (ClickHouse and the like) would take over
when one PostgreSQL is outgrown: ``append`` would write there (keeping the
transaction's exactly-once through the flush batch id), ``find`` and ``page``
would read there; the counters and periods stay in SQL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, event, func, insert, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.corrections import CorrectionKind, audit_of, split_correction_id
from meterd.core.event_records import EventRecord
from meterd.core.quantity import from_units
from meterd.storage.exact import exact_add, exact_sum
from meterd.storage.models import EventLogRow, UsageRollup

QUARTER = timedelta(minutes=15)
#: PostgreSQL's SQLSTATE for a duplicate key.
_UNIQUE_VIOLATION = "23505"
#: Identity of an event: (org, source, id).
EventIdentity = tuple[str, str, str]
_COLUMNS = (
    "org_id", "source", "event_id", "part", "event_time", "customer_id", "feature",
    "entitlement_id", "period_start", "quantity", "event_quantity", "target_id",
    "received_at", "data", "batch_id",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """What the log knows of an event found by its identity (to tell a duplicate
    from a reservation key reused with other parameters)."""

    quantity: Decimal
    target: uuid.UUID | None
    #: The flush batch that wrote it, and when a worker accepted it.
    batch_id: str = ""
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LogFigures:
    rows: int
    #: The oldest partition's day (PostgreSQL) or the oldest event's time (SQLite).
    oldest: datetime | None
    partitions: int
    bytes: int | None


def quarter_of(when: datetime) -> datetime:
    return when.replace(minute=when.minute - when.minute % 15, second=0, microsecond=0)


def partition_name(day: date) -> str:
    return f"event_log_p{day:%Y%m%d}"


class EventLog:
    def __init__(self, sessions: sessionmaker[Session], dialect: str) -> None:
        self.sessions = sessions
        self.dialect = dialect
        self._partitions: set[date] = set()

    # -- write (the flush) ------------------------------------------------------

    def append(self, s: Session, batch_id: str, records: Sequence[EventRecord]) -> int:
        """Write the records and add them to the rollups, in the caller's
        transaction. Returns the rows written."""
        counted = list(_rows(batch_id, records))
        rows = [row for row, _ in counted]
        if not rows:
            return 0
        if self.dialect == "postgresql":
            self._ensure_partitions(s, {r["event_time"].date() for r in rows})
            _copy(s, rows)
        else:
            s.execute(insert(EventLogRow), rows)
        self.add_rollups(s, counted)
        return len(rows)

    def add_rollups(self, s: Session, counted: Sequence[tuple[dict[str, Any], int]]) -> None:
        """Add the rows' quantities and event counts to their quarter hours. A
        correction's row (``core/corrections.py``) adds its quantity (negative where
        it takes back) and no event, except a void's, which takes its event away."""
        sums: dict[tuple[uuid.UUID, datetime], list[Any]] = {}
        for r, events in counted:
            key = (r["entitlement_id"], quarter_of(r["event_time"]))
            entry = sums.get(key)
            if entry is None:
                sums[key] = [r["org_id"], r["customer_id"], r["feature"], r["quantity"], events]
            else:
                entry[3] += r["quantity"]
                entry[4] += events
        values = [
            {
                "entitlement_id": ent,
                "bucket_start": bucket,
                "org_id": org,
                "customer_id": customer,
                "feature": feature,
                "quantity": qty,
                "events": n,
            }
            for (ent, bucket), (org, customer, feature, qty, n) in sorted(sums.items())
        ]
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = dialect_insert(UsageRollup)
        stmt = stmt.on_conflict_do_update(
            index_elements=["entitlement_id", "bucket_start"],
            set_={
                "quantity": exact_add(
                    UsageRollup.quantity, stmt.excluded.quantity, UsageRollup.quantity.type
                ),
                "events": UsageRollup.events + stmt.excluded.events,
            },
        )
        s.execute(stmt, values)

    def _ensure_partitions(self, s: Session, days: Iterable[date]) -> None:
        """Create the missing day partitions in the caller's transaction. They are
        remembered only once it commits: a rolled-back flush takes its CREATEs with
        it, and a cache that kept them would skip them for good (every later COPY of
        that day failing with "no partition of relation event_log found for row")."""
        missing = sorted(set(days) - self._partitions)
        if missing:
            create_partitions(s, missing)
            event.listen(
                s, "after_commit", lambda _session: self._partitions.update(missing), once=True
            )

    # -- read -------------------------------------------------------------------

    def find(self, identities: Sequence[EventIdentity]) -> dict[EventIdentity, LoggedEvent]:
        """The logged events among ``identities``: per (org, source), one indexed
        query per 500 ids (``event_id IN (...)``, which PostgreSQL runs as
        ``= ANY(array)``: one probe of each partition's key index per id). A row
        IN list of (org, source, id) tuples is not used: PostgreSQL plans it as a
        filter over every row (a minute per 500 ids on a 400k-row log)."""
        found: dict[EventIdentity, LoggedEvent] = {}
        by_stream: dict[tuple[str, str], set[str]] = {}
        for org, source, event_id in identities:
            by_stream.setdefault((org, source), set()).add(event_id)
        with self.sessions() as s:
            for (org, source), ids in sorted(by_stream.items()):
                ordered = sorted(ids)
                for start in range(0, len(ordered), 500):
                    rows = s.execute(
                        select(
                            EventLogRow.event_id,
                            EventLogRow.event_quantity,
                            EventLogRow.target_id,
                            EventLogRow.batch_id,
                            EventLogRow.received_at,
                        ).where(
                            EventLogRow.org_id == org,
                            EventLogRow.source == source,
                            EventLogRow.event_id.in_(ordered[start : start + 500]),
                            EventLogRow.part == 0,
                        )
                    ).all()
                    for event_id, quantity, target, batch_id, received_at in rows:
                        found[(org, source, event_id)] = LoggedEvent(
                            Decimal(quantity), target, batch_id, received_at
                        )
        return found

    def page(
        self,
        org: str,
        customer: str,
        *,
        feature: str | None,
        start: datetime,
        end: datetime,
        after: tuple[datetime, str, str, int] | None,
        limit: int,
    ) -> list[EventLogRow]:
        """The customer's logged event parts with start <= time < end, in (time,
        source, id, part) order, after the cursor position ``after``."""
        stmt = select(EventLogRow).where(
            EventLogRow.org_id == org,
            EventLogRow.customer_id == customer,
            EventLogRow.event_time >= start,
            EventLogRow.event_time < end,
        )
        if feature is not None:
            stmt = stmt.where(EventLogRow.feature == feature)
        if after is not None:
            order = (
                EventLogRow.event_time,
                EventLogRow.source,
                EventLogRow.event_id,
                EventLogRow.part,
            )
            stmt = stmt.where(tuple_(*order) > tuple_(*after))
        stmt = stmt.order_by(
            EventLogRow.event_time, EventLogRow.source, EventLogRow.event_id, EventLogRow.part
        ).limit(limit)
        with self.sessions() as s:
            return list(s.scalars(stmt))

    def rollups(
        self,
        org: str,
        *,
        customer: str | None,
        feature: str | None,
        start: datetime,
        end: datetime,
    ) -> Iterator[UsageRollup]:
        """The quarter-hour rollups with start <= bucket < end, streamed (a month of
        a large org is millions of rows: memory stays that of one chunk)."""
        stmt = select(UsageRollup).where(
            UsageRollup.org_id == org,
            UsageRollup.bucket_start >= start,
            UsageRollup.bucket_start < end,
        )
        if customer is not None:
            stmt = stmt.where(UsageRollup.customer_id == customer)
        if feature is not None:
            stmt = stmt.where(UsageRollup.feature == feature)
        stmt = stmt.order_by(UsageRollup.bucket_start).execution_options(yield_per=5000)
        with self.sessions() as s:
            yield from s.scalars(stmt)

    def sums_by_period(self) -> dict[tuple[uuid.UUID, datetime], Decimal]:
        """Total logged quantity per (entitlement, period start): for checks that the
        log and ``usage_periods`` agree."""
        with self.sessions() as s:
            rows = s.execute(
                select(
                    EventLogRow.entitlement_id,
                    EventLogRow.period_start,
                    exact_sum(EventLogRow.quantity, EventLogRow.quantity.type),
                ).group_by(EventLogRow.entitlement_id, EventLogRow.period_start)
            ).all()
        # sum() keeps the column's type: Decimal on both backends.
        return {(e, p): Decimal(total) for e, p, total in rows}

    # -- retention (beat) -------------------------------------------------------

    def maintain(
        self, now: datetime, *, retention: timedelta, ahead_days: int = 7
    ) -> tuple[int, int]:
        """Create partitions from the retention's start to ``ahead_days`` ahead and
        drop (or, on SQLite, delete) what is older than the retention. Returns
        (partitions created, partitions dropped or rows deleted)."""
        cutoff = now - retention
        with self.sessions.begin() as s:
            if self.dialect != "postgresql":
                result = s.execute(delete(EventLogRow).where(EventLogRow.event_time < cutoff))
                return 0, int(result.rowcount or 0)  # type: ignore[attr-defined]
            existing = existing_partitions(s)
            wanted = {
                cutoff.date() + timedelta(days=i)
                for i in range((now.date() - cutoff.date()).days + ahead_days + 1)
            }
            created = sorted(wanted - set(existing))
            create_partitions(s, created)
            dropped = [d for d in existing if d + timedelta(days=1) <= cutoff.date()]
            for day in dropped:
                s.execute(text(f'DROP TABLE IF EXISTS "{partition_name(day)}"'))
        self._partitions = (set(existing) | set(created)) - set(dropped)
        return len(created), len(dropped)

    def figures(self) -> LogFigures:
        with self.sessions() as s:
            if self.dialect != "postgresql":
                rows, oldest = s.execute(
                    select(func.count(), func.min(EventLogRow.event_time))
                ).one()
                return LogFigures(int(rows), oldest, 0, None)
            days = existing_partitions(s)
            estimate = s.execute(
                text(
                    "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint, "
                    "coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint "
                    "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'event_log'::regclass"
                )
            ).one()
        first = datetime.combine(days[0], datetime.min.time(), UTC) if days else None
        return LogFigures(int(estimate[0]), first, len(days), int(estimate[1]))


def existing_partitions(s: Session) -> list[date]:
    names = s.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'event_log'::regclass"
        )
    ).scalars()
    return sorted(datetime.strptime(n.removeprefix("event_log_p"), "%Y%m%d").date() for n in names)


def create_partitions(s: Session, days: Sequence[date]) -> None:
    """Create the day partitions (if missing), serialised by an advisory lock: two
    flushes or the beat job may want the same day at once."""
    if not days:
        return
    s.execute(text("SELECT pg_advisory_xact_lock(hashtext('meterd.event_log.partitions'))"))
    for day in days:
        upper = day + timedelta(days=1)
        s.execute(
            text(
                f'CREATE TABLE IF NOT EXISTS "{partition_name(day)}" PARTITION OF event_log '
                f"FOR VALUES FROM ('{day.isoformat()} 00:00:00+00') "
                f"TO ('{upper.isoformat()} 00:00:00+00')"
            )
        )


def _events_of(record: EventRecord) -> int:
    """How many events each logged row of a record adds to its rollup: 1 for an
    event's part, 0 for a correction's, -1 for a void's (it takes its event away)."""
    if split_correction_id(record.id) is None:
        return 1
    audit = audit_of(record.data)
    return -1 if audit is not None and audit.get("kind") == CorrectionKind.VOID.value else 0


def _rows(batch_id: str, records: Sequence[EventRecord]) -> Iterable[tuple[dict[str, Any], int]]:
    """Each record's rows, with the events each adds to its rollup."""
    for r in records:
        event_quantity = from_units(r.units, r.scale)
        events = _events_of(r)
        for part, allocation in enumerate(r.allocations):
            yield (
                {
                    "org_id": r.org,
                    "source": r.source,
                    "event_id": r.id,
                    "part": part,
                    "event_time": r.time,
                    "customer_id": r.customer,
                    "feature": r.feature,
                    "entitlement_id": allocation.entitlement_id,
                    "period_start": allocation.period_start,
                    "quantity": from_units(allocation.units, r.scale),
                    "event_quantity": event_quantity,
                    "target_id": r.target,
                    "received_at": r.received_at,
                    "data": r.data if part == 0 else None,
                    "batch_id": batch_id,
                },
                events,
            )


def _copy(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    """COPY the rows into the log on the session's own connection (its transaction).
    A row already logged raises ``IntegrityError`` as an INSERT would (COPY runs on
    the driver's cursor, whose errors SQLAlchemy does not wrap)."""
    raw: Any = s.connection().connection.driver_connection
    statement = f"COPY event_log ({', '.join(_COLUMNS)}) FROM STDIN"
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for r in rows:
                copy.write_row(
                    [
                        json.dumps(r[c]) if c == "data" and r[c] is not None else r[c]
                        for c in _COLUMNS
                    ]
                )
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION:
            raise IntegrityError(statement, None, exc) from exc
        raise
