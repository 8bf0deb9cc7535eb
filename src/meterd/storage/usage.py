"""Usage at rest: consumption per period, and the flush that adds to it exactly once.

A flush batch is applied in one transaction that inserts its id into
``flush_batches`` first: a second flush of the same batch blocks on that
primary key until the first commits, then fails, so a batch is never added
twice (see ``services/flush.py`` for the whole protocol).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, exists, literal, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.domain import BillingType
from meterd.core.errors import NotFoundError
from meterd.core.event_records import EventRecord
from meterd.core.notifications import (
    Crossing,
    NewNotification,
    NotificationType,
    envelope,
    threshold_data,
)
from meterd.core.quantity import from_units, to_units
from meterd.core.redis_keys import period_field
from meterd.core.timeutil import from_epoch_micros, next_month_start
from meterd.storage.alert_rules import rules_by_id
from meterd.storage.database import insert_ignoring_duplicates
from meterd.storage.event_log import EventLog
from meterd.storage.exact import exact_add
from meterd.storage.models import Entitlement, Feature, FlushBatch, UsagePeriod
from meterd.storage.notifications import insert_notifications
from meterd.storage.resolution_views import renewal_of

PeriodKey = tuple[uuid.UUID, datetime]


def parse_period_field(field: str) -> PeriodKey:
    """(entitlement id, period start) of a ``<ent hex>:<start us>`` hash field."""
    ent_hex, start = field.split(":", 1)
    return uuid.UUID(hex=ent_hex), from_epoch_micros(int(start))


@dataclass(frozen=True, slots=True)
class AppliedBatch:
    """What applying a flush batch did."""

    #: False when the database had the batch already (a flush that crashed after
    #: its commit).
    applied: bool
    #: Events of the batch the event log held from an earlier batch, left out of
    #: the counts and the log (see ``UsageStore.apply_flush_batch``).
    left_out: tuple[EventRecord, ...] = ()
    #: Those of ``left_out`` accepted a second time (another ``received_at``):
    #: their units were added to the Redis totals twice and must be taken back.
    counted_twice: tuple[EventRecord, ...] = ()


def _without(deltas: dict[str, int], events: Sequence[EventRecord]) -> dict[str, int]:
    """The batch's deltas less what ``events`` added to them."""
    left = dict(deltas)
    for record in events:
        for part in record.allocations:
            name = period_field(part.entitlement_id, part.period_start)
            left[name] = left.get(name, 0) - part.units
    return left


def _periods_of(events: Sequence[EventRecord]) -> frozenset[PeriodKey]:
    return frozenset((p.entitlement_id, p.period_start) for r in events for p in r.allocations)


class UsageStore:
    def __init__(self, sessions: sessionmaker[Session], event_log: EventLog) -> None:
        self.sessions = sessions
        self.event_log = event_log

    def apply_flush_batch(
        self,
        batch_id: str,
        deltas: dict[str, int],
        now: datetime,
        crossings: Sequence[Crossing] = (),
        events: Sequence[EventRecord] = (),
    ) -> AppliedBatch:
        """Add a flush batch to the usage periods, exactly once, with a notification
        for each threshold crossing it carries and the records of its events in the
        event log.

        An event the log already holds from an earlier batch must not be added
        again. Two ways lead there, told apart by when a worker accepted it:

        * accepted again (another ``received_at``): a Redis that lost its dedupe
          markers (no AOF) took a redelivery for a new event, and its units are in
          the Redis totals twice; it is returned in ``counted_twice`` for the
          caller to take them back;
        * the same acceptance (the same ``received_at``): a Redis restored from a
          snapshot older than the flush that logged it (RDB, or the last second
          of ``appendfsync everysec``) holds it again, once in its totals.

        Either way its row would break the log's key and stop every flush after
        it, so the batch is applied again without it and its units, and a
        threshold crossing on a period it touched is kept only if the committed
        consumption reaches the threshold. This is found only when the log
        refuses a row (a redelivery carries its event's time, as every meterd
        producer does): checking every batch would cost a log search per event."""
        try:
            self._apply(batch_id, deltas, now, crossings, events)
            return AppliedBatch(True)
        except IntegrityError:
            if self.batch_committed(batch_id):
                return AppliedBatch(False, *self._logged_before(batch_id, events))
            left_out, counted_twice = self._logged_before(batch_id, events)
            if not left_out:
                raise
        skipped = {(r.org, r.source, r.id) for r in left_out}
        self._apply(
            batch_id,
            _without(deltas, left_out),
            now,
            crossings,
            [r for r in events if (r.org, r.source, r.id) not in skipped],
            recheck=_periods_of(left_out),
        )
        return AppliedBatch(True, left_out, counted_twice)

    def _apply(
        self,
        batch_id: str,
        deltas: dict[str, int],
        now: datetime,
        crossings: Sequence[Crossing],
        events: Sequence[EventRecord],
        recheck: frozenset[PeriodKey] = frozenset(),
    ) -> None:
        keys = sorted((parse_period_field(f), units) for f, units in deltas.items() if units)
        with self.sessions.begin() as s:
            scales = _scales_of(s, {e for (e, _), _ in keys})
            parsed = [(key, from_units(units, scales[key[0]])) for key, units in keys]
            total = sum((amount for _, amount in parsed), Decimal(0))
            s.add(FlushBatch(id=batch_id, committed_at=now, periods=len(parsed), total=total))
            s.flush()
            _ensure_periods(s, [key for key, _ in parsed], now)
            add_consumption(s, parsed, now)
            if crossings:
                payloads = _crossing_payloads(s, crossings, scales, recheck)
                insert_notifications(s, payloads, now)
            self.event_log.append(s, batch_id, events)

    def _logged_before(
        self, batch_id: str, events: Sequence[EventRecord]
    ) -> tuple[tuple[EventRecord, ...], tuple[EventRecord, ...]]:
        """The events the log holds from a batch other than ``batch_id``, and those
        of them accepted again (``AppliedBatch``)."""
        if not events:
            return (), ()
        found = self.event_log.find([(r.org, r.source, r.id) for r in events])
        left_out: list[EventRecord] = []
        again: list[EventRecord] = []
        for r in events:
            logged = found.get((r.org, r.source, r.id))
            if logged is None or logged.batch_id == batch_id:
                continue
            left_out.append(r)
            if logged.received_at != r.received_at:
                again.append(r)
        return tuple(left_out), tuple(again)

    def batch_committed(self, batch_id: str) -> bool:
        with self.sessions() as s:
            return s.get(FlushBatch, batch_id) is not None

    def flushed_consumption(
        self, keys: Sequence[PeriodKey], batch_id: str | None
    ) -> tuple[dict[PeriodKey, Decimal], bool]:
        """Flushed consumption per period, and whether ``batch_id`` is committed,
        read in one statement so both come from the same snapshot."""
        committed: Any = (
            exists(select(FlushBatch.id).where(FlushBatch.id == batch_id))
            if batch_id
            else literal(False)
        )
        stmt = select(
            UsagePeriod.entitlement_id,
            UsagePeriod.period_start,
            UsagePeriod.consumed,
            committed.label("committed"),
        ).where(tuple_(UsagePeriod.entitlement_id, UsagePeriod.period_start).in_(keys))
        with self.sessions() as s:
            rows = s.execute(stmt).all()
            if rows:
                return {(r[0], r[1]): r[2] for r in rows}, bool(rows[0][3])
            return {}, bool(s.execute(select(committed)).scalar())

    def periods_of(self, entitlement_id: uuid.UUID) -> list[UsagePeriod]:
        """Every usage period of an entitlement, oldest first."""
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(UsagePeriod)
                    .where(UsagePeriod.entitlement_id == entitlement_id)
                    .order_by(UsagePeriod.period_start)
                )
            )


def _scales_of(s: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The scale of each entitlement's feature: what its counters' units are."""
    scales: dict[uuid.UUID, int] = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), 1000):
        rows = s.execute(
            select(Entitlement.id, Feature.scale)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(Entitlement.id.in_(ordered[start : start + 1000]))
        ).all()
        scales.update({ent_id: scale for ent_id, scale in rows})
    return scales


def add_consumption(s: Session, parsed: Sequence[tuple[PeriodKey, Decimal]], now: datetime) -> None:
    """Add signed deltas to their periods' consumption in the caller's transaction
    (the flush and the backfill's closed periods)."""
    if not parsed:
        return
    table = UsagePeriod.__table__
    s.execute(
        update(table)  # type: ignore[arg-type]
        .where(
            table.c.entitlement_id == bindparam("e_id"),
            table.c.period_start == bindparam("p_start"),
        )
        .values(
            consumed=exact_add(
                table.c.consumed,
                bindparam("delta", type_=UsagePeriod.consumed.type),
                UsagePeriod.consumed.type,
            ),
            updated_at=bindparam("now", type_=UsagePeriod.updated_at.type),
        ),
        [{"e_id": e, "p_start": p, "delta": amount, "now": now} for (e, p), amount in parsed],
    )


def _crossing_payloads(
    s: Session,
    crossings: Sequence[Crossing],
    scales: dict[uuid.UUID, int],
    recheck: frozenset[PeriodKey] = frozenset(),
) -> list[NewNotification]:
    """The notifications of ``crossings``. On a period in ``recheck`` (units left out
    of the batch after Redis counted them) a crossing stands only if the consumption
    just written reaches its threshold, and reports that consumption."""
    ids = {c.entitlement_id for c in crossings}
    rows = s.execute(
        select(
            UsagePeriod.entitlement_id,
            UsagePeriod.period_start,
            UsagePeriod.quantity,
            UsagePeriod.consumed,
            Entitlement.org_id,
            Entitlement.customer_id,
            Entitlement.rollover_max,
            Feature.key,
        )
        .join(Entitlement, Entitlement.id == UsagePeriod.entitlement_id)
        .join(Feature, Feature.id == Entitlement.feature_id)
        .where(UsagePeriod.entitlement_id.in_(ids))
    ).all()
    by_period = {(r.entitlement_id, r.period_start): r for r in rows}
    stored = rules_by_id(s, {c.rule_id for c in crossings if c.default_rule is None})
    payloads = []
    for crossing in crossings:
        row = by_period.get((crossing.entitlement_id, crossing.period_start))
        rule = crossing.default_rule or (
            stored[crossing.rule_id].judged if crossing.rule_id in stored else None
        )
        if row is None or rule is None:
            continue  # not a period of the entitlement, or a rule of no row (cannot happen)
        scale = scales.get(crossing.entitlement_id, 6)
        quantity, rolled_over = _judged_limit(crossing, row.quantity, row.rollover_max, scale)
        limit = to_units(quantity, scale) if quantity is not None else None
        if rule.point(limit, scale) is None:
            continue  # a rule that needs a limit, on a period without one (ingest checks)
        if (crossing.entitlement_id, crossing.period_start) in recheck:
            consumed = Decimal(row.consumed)
            point = rule.point(limit, scale)
            if point is None or to_units(consumed, scale) < point:
                continue  # crossed only by units counted twice
            crossing = replace(crossing, consumed_units=to_units(consumed, scale))
        payloads.append(
            envelope(
                notification_id=crossing.notification_id,
                kind=NotificationType.THRESHOLD_CROSSED,
                org=row.org_id,
                customer_id=row.customer_id,
                feature=row.key,
                entitlement_id=crossing.entitlement_id,
                occurred_at=crossing.at,
                data=threshold_data(crossing, rule, quantity, scale, rolled_over=rolled_over),
            )
        )
    return payloads


def _judged_limit(
    crossing: Crossing, quantity: Decimal | None, rollover_max: Decimal | None, scale: int
) -> tuple[Decimal | None, Decimal | None]:
    """(the limit ``crossing`` was judged against, what of it rolled over): for an
    entitlement that rolls over, the limit the script recorded with the crossing (the
    period's quantity plus the carry it counted with) and the carry; for the others
    (and crossings recorded without a limit) the period's quantity, as before."""
    rolls_over = rollover_max is not None and rollover_max > 0
    if not rolls_over or crossing.limit_units is None or quantity is None:
        return quantity, None
    limit = from_units(crossing.limit_units, scale)
    return limit, limit - quantity


def _new_period(ent: Entitlement, start: datetime) -> tuple[datetime | None, Any]:
    """(end, quantity) of a period ingest opened at ``start``: a PAY_PER_USE month, or
    a renewing entitlement's term on the calendar (``lifecycle.period_at``)."""
    if ent.billing_type == BillingType.PAY_PER_USE:
        return next_month_start(start), ent.quantity
    renewal = renewal_of(ent)
    if renewal is not None:
        return renewal.term.end_after(renewal.anchor, start), renewal.quantity
    return None, ent.quantity


def _ensure_periods(s: Session, keys: Sequence[PeriodKey], now: datetime) -> None:
    """Create the usage period rows a batch touches that do not exist yet
    (PAY_PER_USE months open on their first usage)."""
    if not keys:
        return
    existing = {
        (row[0], row[1])
        for row in s.execute(
            select(UsagePeriod.entitlement_id, UsagePeriod.period_start).where(
                tuple_(UsagePeriod.entitlement_id, UsagePeriod.period_start).in_(keys)
            )
        )
    }
    missing = [k for k in keys if k not in existing]
    if not missing:
        return
    ents = {
        e.id: e
        for e in s.scalars(select(Entitlement).where(Entitlement.id.in_({e for e, _ in missing})))
    }
    rows = []
    for ent_id, start in missing:
        ent = ents.get(ent_id)
        if ent is None:
            raise NotFoundError("entitlement", ent_id)
        end, quantity = _new_period(ent, start)
        rows.append(
            {
                "id": uuid.uuid4(),
                "org_id": ent.org_id,
                "entitlement_id": ent_id,
                "period_start": start,
                "period_end": end,
                "quantity": quantity,
                "consumed": Decimal(0),
                "updated_at": now,
            }
        )
    # The lifecycle job may open the same month at the same time.
    insert_ignoring_duplicates(s, UsagePeriod, rows, ["entitlement_id", "period_start"])
