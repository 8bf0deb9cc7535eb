"""Backfill at rest: the audit of each import, and the one transaction that counts
a batch of history into periods no live event can reach any more.

A period that ended before the late window takes no live usage (every event
timed in it is ``late``) and has no unflushed count in Redis, so its figure is
its ``usage_periods`` row alone: a batch of backfilled events is counted there
directly, in one transaction that also writes their log rows
(``event_log_backfill``), their rollups, the batch's id and the audit counts.
The batch id (``backfill_batches``) makes a batch applied twice count once; the
log's primary key (org, source, id, part) makes two batches racing with the
same event count it once (the loser's transaction fails and is planned again,
when the event is found). The burn-down itself is planned by the caller
(``services/backfill.py``) on the consumption read here under a row lock, so
two batches touching one period see each other's units. A level period's
figure (MAX, LATEST) is set on condition that it is still the one read; the
records a LATEST or UNIQUE_COUNT period only the backfill counts needs (its
latest sample, its values: ``backfill_latest``, ``backfill_unique_values``) are
read and written under the same locks.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.domain import EntitlementView, Period
from meterd.core.errors import ConflictError
from meterd.storage.database import bulk_insert, insert_ignoring_duplicates
from meterd.storage.event_log import EventIdentity, EventLog
from meterd.storage.models import (
    Backfill,
    BackfillBatch,
    BackfillLatest,
    BackfillLogRow,
    BackfillUniqueValue,
    Entitlement,
    Feature,
    UsagePeriod,
)
from meterd.storage.resolution_views import (
    _PERIOD_COLUMNS,
    VIEW_COLUMNS,
    entitlement_view,
    suspensions_of,
)
from meterd.storage.usage import PeriodKey, add_consumption

#: (org, customer, feature key)
CustomerFeature = tuple[str, str, str]
#: How many times a batch that lost a race on an event (the log's key) is planned
#: again before the caller is told to retry later.
MAX_PLAN_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class BackfillCounts:
    """What one batch did, added to its backfill's audit row."""

    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    live: int = 0


@dataclass(frozen=True, slots=True)
class LogPart:
    """One row of ``event_log_backfill``: a part of a backfilled event (or, with
    ``entitlement_id`` None, the identity of one counted through the live path)."""

    org: str
    source: str
    id: str
    part: int
    time: datetime
    customer: str
    feature: str
    entitlement_id: uuid.UUID | None
    period_start: datetime | None
    quantity: Decimal
    event_quantity: Decimal
    target: uuid.UUID | None
    received_at: datetime
    data: Any

    def row(self, backfill_id: uuid.UUID) -> dict[str, Any]:
        return {
            "org_id": self.org,
            "source": self.source,
            "event_id": self.id,
            "part": self.part,
            "event_time": self.time,
            "customer_id": self.customer,
            "feature": self.feature,
            "entitlement_id": self.entitlement_id,
            "period_start": self.period_start,
            "quantity": self.quantity,
            "event_quantity": self.event_quantity,
            "target_id": self.target,
            "received_at": self.received_at,
            "data": self.data if self.part == 0 else None,
            "backfill_id": backfill_id,
            "counted_live": self.entitlement_id is None,
        }


@dataclass(frozen=True, slots=True)
class NewPeriod:
    """A period row the batch needs (a summarised term has none): created with the
    term's own quantity if missing."""

    org: str
    entitlement_id: uuid.UUID
    period: Period


@dataclass(slots=True)
class PeriodRecords:
    """What a LATEST or UNIQUE_COUNT period only the backfill counts holds beyond its
    figure (``backfill_latest``, ``backfill_unique_values``), as read under the
    period's lock; the plan moves it as it plans."""

    #: each LATEST period's latest sample: (event time, event key)
    latest: dict[PeriodKey, tuple[datetime, str]] = field(default_factory=dict)
    #: of each UNIQUE_COUNT period, the values it holds (of those the batch asked)
    values: dict[PeriodKey, set[str]] = field(default_factory=dict)


#: Plans the batch's parts from the consumption of its periods and their records
#: (read under lock).
Planner = Callable[[dict[PeriodKey, Decimal], PeriodRecords], list[LogPart]]


class BatchRaced(ConflictError):
    """Another batch logged one of this batch's events first: plan again."""


class BackfillStore:
    def __init__(self, sessions: sessionmaker[Session], event_log: EventLog) -> None:
        self.sessions = sessions
        self.event_log = event_log
        #: log rows this process wrote, and how many it had written at its last ANALYZE
        self._written = 0
        self._analyzed_at = 0

    # -- the audit ------------------------------------------------------------------

    def open(self, org: str, actor: str, via: str, now: datetime, events: int = 0) -> uuid.UUID:
        """A new backfill's audit row; returns its id."""
        backfill_id = uuid.uuid4()
        with self.sessions.begin() as s:
            s.add(
                Backfill(
                    id=backfill_id,
                    org_id=org,
                    actor=actor[:200],
                    via=via,
                    created_at=now,
                    updated_at=now,
                    events=events,
                    accepted=0,
                    duplicates=0,
                    dead_lettered=0,
                    live=0,
                )
            )
        return backfill_id

    def get(self, backfill_id: uuid.UUID) -> Backfill | None:
        with self.sessions() as s:
            row = s.get(Backfill, backfill_id)
            if row is not None:
                s.expunge(row)
            return row

    def add_counts(self, backfill_id: uuid.UUID, counts: BackfillCounts, now: datetime) -> None:
        """Add to a backfill's audit counts outside a batch's transaction (what a copy
        of a batch applied by another copy counted through the live path)."""
        with self.sessions.begin() as s:
            self._count(s, backfill_id, counts, now)

    def batch_applied(self, backfill_id: uuid.UUID, batch_no: int) -> bool:
        with self.sessions() as s:
            return s.get(BackfillBatch, (backfill_id, batch_no)) is not None

    # -- reads ------------------------------------------------------------------------

    def known(self, identities: Iterable[EventIdentity]) -> set[EventIdentity]:
        """The identities already backfilled (or counted live by a backfill)."""
        by_stream: dict[tuple[str, str], set[str]] = {}
        for org, source, event_id in identities:
            by_stream.setdefault((org, source), set()).add(event_id)
        found: set[EventIdentity] = set()
        with self.sessions() as s:
            for (org, source), ids in sorted(by_stream.items()):
                ordered = sorted(ids)
                for start in range(0, len(ordered), 500):
                    found.update(
                        (org, source, event_id)
                        for event_id in s.scalars(
                            select(BackfillLogRow.event_id).where(
                                BackfillLogRow.org_id == org,
                                BackfillLogRow.source == source,
                                BackfillLogRow.event_id.in_(ordered[start : start + 500]),
                                BackfillLogRow.part == 0,
                            )
                        )
                    )
        return found

    def views(
        self,
        keys: Iterable[CustomerFeature],
        created: dict[uuid.UUID, datetime] | None = None,
    ) -> dict[CustomerFeature, list[EntitlementView]]:
        """Every entitlement of each (org, customer, feature), with all its stored
        periods and its suspensions: history is judged by the same
        ``lifecycle.status_at``/``period_at`` as live usage, over the whole record
        (the resolution data keeps only the periods live usage can still reach).
        ``created``: filled with each entitlement's creation time."""
        wanted = set(keys)
        result: dict[CustomerFeature, list[EntitlementView]] = {k: [] for k in wanted}
        if not wanted:
            return result
        with self.sessions() as s:
            rows: list[Any] = []
            for org in sorted({k[0] for k in wanted}):
                of_org = [k for k in wanted if k[0] == org]
                # plain columns, not ORM objects: this runs for every batch
                found = s.execute(
                    select(*VIEW_COLUMNS, Feature.key, Feature.scale, Entitlement.created_at)
                    .join(Feature, Feature.id == Entitlement.feature_id)
                    .where(
                        Entitlement.org_id == org,
                        Entitlement.customer_id.in_({k[1] for k in of_org}),
                        Feature.key.in_({k[2] for k in of_org}),
                    )
                ).all()
                rows += [row for row in found if (org, row.customer_id, row.key) in wanted]
            ids = [row.id for row in rows]
            periods: dict[uuid.UUID, list[Any]] = {}
            for start in range(0, len(ids), 500):
                for period in s.execute(
                    select(*_PERIOD_COLUMNS).where(
                        UsagePeriod.entitlement_id.in_(ids[start : start + 500])
                    )
                ):
                    periods.setdefault(period.entitlement_id, []).append(period)
            suspensions = suspensions_of(s, ids)
        for row in rows:
            if created is not None:
                created[row.id] = row.created_at
            view = entitlement_view(row, periods.get(row.id, []), suspensions.get(row.id, ()))
            result[(row.org_id, row.customer_id, row.key)].append(view)
        return result

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
    ) -> list[BackfillLogRow]:
        """As ``EventLog.page``, over the backfilled parts of closed periods (an event
        counted through the live path is in ``event_log``)."""
        order = (
            BackfillLogRow.event_time,
            BackfillLogRow.source,
            BackfillLogRow.event_id,
            BackfillLogRow.part,
        )
        stmt = select(BackfillLogRow).where(
            BackfillLogRow.org_id == org,
            BackfillLogRow.customer_id == customer,
            BackfillLogRow.event_time >= start,
            BackfillLogRow.event_time < end,
            BackfillLogRow.counted_live.is_(False),
        )
        if feature is not None:
            stmt = stmt.where(BackfillLogRow.feature == feature)
        if after is not None:
            stmt = stmt.where(tuple_(*order) > tuple_(*after))
        with self.sessions() as s:
            return list(s.scalars(stmt.order_by(*order).limit(limit)))

    # -- the batch --------------------------------------------------------------------

    def apply(
        self,
        backfill_id: uuid.UUID,
        batch_no: int,
        now: datetime,
        *,
        periods: Sequence[NewPeriod],
        plan: Planner,
        live: Sequence[LogPart],
        counts: BackfillCounts,
        levels: Collection[PeriodKey] = (),
        latest: Collection[PeriodKey] = (),
        unique: Mapping[PeriodKey, set[str]] | None = None,
    ) -> list[LogPart] | None:
        """Count one batch, once: None if the batch was applied before. ``plan`` gets
        the consumption of ``periods`` (locked) and returns the parts to count and
        log; ``live`` are the identities of events counted through the live path
        (logged, not counted here); ``counts`` the audit's increments; ``levels``
        the periods whose figure is a level (MAX, LATEST): each is set to what
        ``plan`` made of the figure it read, on condition that the figure is still the
        one read; ``latest`` the LATEST periods whose latest sample the plan reads,
        ``unique`` the UNIQUE_COUNT periods and the values asked of each (their
        records are read under the periods' locks and written as the plan left them).
        Raises ``BatchRaced`` if another batch logged one of its events first, or if
        a level period's figure moved under the plan (a writer that skipped its
        lock)."""
        if self.batch_applied(backfill_id, batch_no):
            return None
        try:
            with self.sessions.begin() as s:
                # First: a copy of this batch racing us blocks here until we commit.
                s.add(BackfillBatch(backfill_id=backfill_id, batch_no=batch_no, applied_at=now))
                s.flush()
                used = self._locked_periods(s, periods, now)
                read = dict(used)
                records = _read_records(s, latest, unique or {})
                before = PeriodRecords(
                    dict(records.latest), {k: set(v) for k, v in records.values.items()}
                )
                parts = plan(used, records)
                _write_records(s, before, records)
                deltas: dict[PeriodKey, Decimal] = {}
                for p in parts:
                    if p.entitlement_id is not None and p.period_start is not None:
                        key = (p.entitlement_id, p.period_start)
                        deltas[key] = deltas.get(key, Decimal(0)) + p.quantity
                moved = [(k, v) for k, v in sorted(deltas.items()) if v]
                add_consumption(s, [(k, v) for k, v in moved if k not in levels], now)
                of_levels = [(k, read.get(k, Decimal(0)), v) for k, v in moved if k in levels]
                _move_levels(s, of_levels, now)
                rows = [p.row(backfill_id) for p in parts]
                if rows:
                    _insert_new(s, rows)
                    self.event_log.add_rollups(s, [(row, 1) for row in rows])
                insert_ignoring_duplicates(
                    s,
                    BackfillLogRow,
                    [p.row(backfill_id) for p in live],
                    ["org_id", "source", "event_id", "part"],
                )
                self._count(s, backfill_id, counts, now)
        except IntegrityError as exc:
            if self.batch_applied(backfill_id, batch_no):
                return None
            raise BatchRaced(str(exc)[:300]) from exc
        self._written += len(parts) + len(live)
        self._keep_statistics()
        return parts

    def _keep_statistics(self) -> None:
        """ANALYZE the backfill log (and the periods it opens) each time this process
        has doubled what it wrote (from 10,000 rows): an import fills a table that
        started empty, and with the statistics of an empty table PostgreSQL reads the
        dedupe lookup as a filter over every row of the org and source (measured: the
        rate fell linearly) until autovacuum analyses it, if it runs at all."""
        if self._written < max(10_000, 2 * self._analyzed_at):
            return
        self._analyzed_at = self._written
        with self.sessions.begin() as s:
            if s.get_bind().dialect.name == "postgresql":
                s.execute(
                    text(
                        "ANALYZE event_log_backfill, usage_periods, backfill_latest,"
                        " backfill_unique_values"
                    )
                )

    def _locked_periods(
        self, s: Session, periods: Sequence[NewPeriod], now: datetime
    ) -> dict[PeriodKey, Decimal]:
        """The consumption of the periods, their rows locked (PostgreSQL) in key order
        so two batches never deadlock; the missing rows are created first
        (insert-or-ignore, as the lifecycle job and the flush do)."""
        if not periods:
            return {}
        unique = {(p.entitlement_id, p.period.start): p for p in periods}
        used = _read_locked(s, sorted(unique))
        missing = sorted(k for k in unique if k not in used)
        if missing:
            insert_ignoring_duplicates(
                s,
                UsagePeriod,
                [
                    {
                        "id": uuid.uuid4(),
                        "org_id": unique[k].org,
                        "entitlement_id": k[0],
                        "period_start": k[1],
                        "period_end": unique[k].period.end,
                        "quantity": unique[k].period.quantity,
                        "consumed": Decimal(0),
                        "updated_at": now,
                    }
                    for k in missing
                ],
                ["entitlement_id", "period_start"],
            )
            used.update(_read_locked(s, missing))
        return used

    @staticmethod
    def _count(s: Session, backfill_id: uuid.UUID, counts: BackfillCounts, now: datetime) -> None:
        s.execute(
            update(Backfill)
            .where(Backfill.id == backfill_id)
            .values(
                events=Backfill.events + counts.events,
                accepted=Backfill.accepted + counts.accepted,
                duplicates=Backfill.duplicates + counts.duplicates,
                dead_lettered=Backfill.dead_lettered + counts.dead_lettered,
                live=Backfill.live + counts.live,
                updated_at=now,
            )
        )


#: PostgreSQL's unique_violation.
_UNIQUE_VIOLATION = "23505"


def _insert_new(s: Session, rows: list[dict[str, Any]]) -> None:
    """The log rows, with COPY on PostgreSQL; an event logged already (a racing
    batch) raises ``IntegrityError`` either way (COPY's driver error is not wrapped
    by SQLAlchemy)."""
    if s.get_bind().dialect.name == "postgresql":  # COPY takes JSON as text
        rows = [{**r, "data": None if r["data"] is None else json.dumps(r["data"])} for r in rows]
    try:
        bulk_insert(s, BackfillLogRow, rows)
    except IntegrityError:
        raise
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION:
            raise IntegrityError("COPY event_log_backfill", None, exc) from exc
        raise


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _read_records(
    s: Session, latest: Collection[PeriodKey], unique: Mapping[PeriodKey, set[str]]
) -> PeriodRecords:
    """The records of the batch's LATEST and UNIQUE_COUNT periods (their rows are
    locked by the caller: no other batch moves them meanwhile)."""
    records = PeriodRecords()
    wanted = sorted(set(latest))
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        keys = set(chunk)
        for e, p, t, key in s.execute(
            select(
                BackfillLatest.entitlement_id,
                BackfillLatest.period_start,
                BackfillLatest.event_time,
                BackfillLatest.event_key,
            ).where(
                BackfillLatest.entitlement_id.in_({e for e, _ in chunk}),
                BackfillLatest.period_start.in_({p for _, p in chunk}),
            )
        ):
            if (e, p) in keys:
                records.latest[(e, p)] = (t, key)
    # (period, digest) pairs: by index conditions on each column, the pairs kept here
    # (as ``_read_locked``); chunks of periods, each with the digests asked of them
    asked = {(k, _digest(v)): v for k, values in unique.items() for v in values}
    for k in unique:
        records.values.setdefault(k, set())
    periods = sorted(unique)
    for start in range(0, len(periods), 200):
        chunk = periods[start : start + 200]
        of_chunk = set(chunk)
        digests = sorted({d for (k, d) in asked if k in of_chunk})
        for first in range(0, len(digests), 1000):
            for e, p, d in s.execute(
                select(
                    BackfillUniqueValue.entitlement_id,
                    BackfillUniqueValue.period_start,
                    BackfillUniqueValue.digest,
                ).where(
                    BackfillUniqueValue.entitlement_id.in_({e for e, _ in chunk}),
                    BackfillUniqueValue.period_start.in_({p for _, p in chunk}),
                    BackfillUniqueValue.digest.in_(digests[first : first + 1000]),
                )
            ):
                value = asked.get(((e, p), d))
                if value is not None:
                    records.values[(e, p)].add(value)
    return records


def _write_records(s: Session, before: PeriodRecords, after: PeriodRecords) -> None:
    """What the plan changed of the records: a LATEST period's new latest sample, a
    UNIQUE_COUNT period's new values."""
    new_latest, moved_latest = [], []
    for (e, p), (t, key) in sorted(after.latest.items()):
        if (e, p) not in before.latest:
            new_latest.append(
                {"entitlement_id": e, "period_start": p, "event_time": t, "event_key": key}
            )
        elif before.latest[(e, p)] != (t, key):
            moved_latest.append({"e_id": e, "p_start": p, "t": t, "key": key})
    if new_latest:
        s.execute(BackfillLatest.__table__.insert(), new_latest)  # type: ignore[attr-defined]
    if moved_latest:
        table = BackfillLatest.__table__
        s.execute(
            update(table)  # type: ignore[arg-type]
            .where(
                table.c.entitlement_id == bindparam("e_id"),
                table.c.period_start == bindparam("p_start"),
            )
            .values(
                event_time=bindparam("t", type_=BackfillLatest.event_time.type),
                event_key=bindparam("key"),
            ),
            moved_latest,
        )
    new_values = [
        {"entitlement_id": e, "period_start": p, "digest": _digest(v), "value": v}
        for (e, p), values in sorted(after.values.items())
        for v in sorted(values - before.values.get((e, p), set()))
    ]
    if new_values:
        s.execute(BackfillUniqueValue.__table__.insert(), new_values)  # type: ignore[attr-defined]


def _move_levels(
    s: Session, moves: Sequence[tuple[PeriodKey, Decimal, Decimal]], now: datetime
) -> None:
    """Move each level period's figure from the one read by the plan's move (MAX
    raises it, LATEST sets its share of a later sample), on condition that it is
    still the one read: the row lock keeps every writer that takes it out, and a
    writer that does not (or a figure rewritten by a recount) makes the batch plan
    again on the new figure (``BatchRaced``) rather than add a move planned on a
    stale one."""
    if not moves:
        return
    table = UsagePeriod.__table__
    result = s.execute(
        update(table)  # type: ignore[arg-type]
        .where(
            table.c.entitlement_id == bindparam("e_id"),
            table.c.period_start == bindparam("p_start"),
            table.c.consumed == bindparam("read", type_=UsagePeriod.consumed.type),
        )
        .values(
            consumed=bindparam("figure", type_=UsagePeriod.consumed.type),
            updated_at=bindparam("now", type_=UsagePeriod.updated_at.type),
        ),
        [
            {"e_id": e, "p_start": p, "read": figure, "figure": figure + move, "now": now}
            for (e, p), figure, move in moves
        ],
    )
    # one statement, many parameter sets: the rows matched, summed (both drivers)
    if result.rowcount != len(moves):  # type: ignore[attr-defined]
        raise BatchRaced(
            f"{len(moves) - result.rowcount} level period(s) no longer hold the figure"  # type: ignore[attr-defined]
            " read: planned again"
        )


def _read_locked(s: Session, keys: Sequence[PeriodKey]) -> dict[PeriodKey, Decimal]:
    """The consumption of ``keys``, the rows locked. ``entitlement_id IN (...) AND
    period_start IN (...)``, two index conditions on the unique key, then the pairs
    kept here: a row-value IN of (entitlement, start) tuples is planned by
    PostgreSQL as a filter over the whole table (see ``EventLog.find``)."""
    wanted = set(keys)
    used: dict[PeriodKey, Decimal] = {}
    ordered = sorted(wanted)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        rows = s.execute(
            select(UsagePeriod.entitlement_id, UsagePeriod.period_start, UsagePeriod.consumed)
            .where(
                UsagePeriod.entitlement_id.in_({e for e, _ in chunk}),
                UsagePeriod.period_start.in_({p for _, p in chunk}),
            )
            .order_by(UsagePeriod.entitlement_id, UsagePeriod.period_start)
            .with_for_update()
        ).all()
        used.update({(e, p): Decimal(c) for e, p, c in rows if (e, p) in wanted})
    return used
