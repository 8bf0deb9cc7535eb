"""Backfill: count history older than the late window into the periods that contain
each event's time (issue 22, item 3; docs/architecture.md, "Backfill").

Each event is validated and turned into items as live ingest does
(``services/meters.py``), judged at its own time by the same rules
(``lifecycle.status_at``/``period_at`` over the entitlement's whole record, the
burn-down order of ``storage/resolution.burn_down_order``: priority, soonest
end, number; overage on the last), and deduplicated by (org, source, id)
against this batch, the backfill log (kept for good) and the event log (the
retention). Then one of two paths counts it:

* **its periods are all closed** (they ended before ``now - METERD_LATE_WINDOW``:
  no live event can reach them, Redis holds no count of them): it is counted in
  SQL, in one transaction per batch (``storage/backfill.py``), creating the
  period row a summarised term lacks, with the term's quantity;
* **a period is still open** (live usage can still land there, its running total
  is in Redis): it goes through the live path, ``ingest.lua`` through a
  ``UsageCounter`` whose late window is ``BACKFILL_HORIZON``: the Redis totals,
  markers, pending counts and the flush stay exact by construction, and its
  identity is written to the backfill log so dedupe outlives the log's retention.

In SQL, each aggregation as ``ingest.lua``'s ``resolve`` counts it (``_plan``):

* SUM and COUNT burn down (each candidate takes its room, the last the rest);
* MAX, in any closed period: a level only rises, so a sample moves each
  candidate's figure to max(figure, its share of the level) (``level_share``, the
  script's twin), exact whatever history the log no longer holds; its part is
  what it moved, so the log sums to the figure;
* LATEST and UNIQUE_COUNT need the period's latest sample or the values it
  counted, which Redis drops once the period closes: counted only in periods
  only the backfill can reach (they ended before their grant was created less
  the late window, ``_owned``), from what it keeps of them
  (``storage.backfill.PeriodRecords``); elsewhere dead-lettered ``invalid`` with
  the reason (``_not_countable``, ``_owned_in_part``).

Level figures are written on condition that they are still the ones read (else
the batch is planned again), beside the row locks that order the batches.
"""

from __future__ import annotations

import functools
import getpass
import time
import uuid
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from meterd.core.burn_down import candidates_at, level_share
from meterd.core.domain import (
    Aggregation,
    EntitlementView,
    Outcome,
    Period,
)
from meterd.core.errors import UnavailableError
from meterd.core.event_parsing import parse_event
from meterd.core.event_records import event_key
from meterd.core.events import (
    InvalidEvent,
    RawEvent,
    UsageEvent,
    dead_letter_payload,
    with_time,
)
from meterd.core.quantity import from_units, to_units
from meterd.core.timeutil import from_epoch_micros
from meterd.services.counting import UsageCounter
from meterd.services.ingest import OUTCOMES
from meterd.services.meters import MeterCatalog, OrgMeters, combined_outcome, items_of
from meterd.storage.backfill import (
    MAX_PLAN_ROUNDS,
    BackfillCounts,
    BackfillStore,
    BatchRaced,
    CustomerFeature,
    LogPart,
    NewPeriod,
    PeriodRecords,
)
from meterd.storage.dead_letters import DeadLetterRecord, DeadLetterStore
from meterd.storage.event_log import EventLog
from meterd.storage.resolution import burn_down_order
from meterd.storage.usage import PeriodKey

#: The live path's late window for backfilled events: any age.
BACKFILL_HORIZON = timedelta(days=366 * 200)
#: Events per ``meterd.backfill_batch`` message and per ``meterd import`` batch.
BACKFILL_BATCH = 1000
#: Aggregations a closed period can be backfilled for (a sum of its events).
SUMMABLE = frozenset({Aggregation.SUM, Aggregation.COUNT})
#: Aggregations whose closed period's figure is a level that only rises: a sample
#: moves it to max(figure, its share), whatever history the log no longer holds.
RISING = frozenset({Aggregation.MAX})
#: Aggregations whose figure depends on more than itself (the latest sample, the
#: values counted): counted in a closed period only if the backfill alone can ever
#: count it (``BackfillService._owned``), from what it keeps of it.
RECORDED = frozenset({Aggregation.LATEST, Aggregation.UNIQUE_COUNT})
#: Aggregations whose figure the SQL path sets rather than adds to.
LEVELS = frozenset({Aggregation.MAX, Aggregation.LATEST})
#: What the SQL path counts into any closed period.
COUNTED_IN_SQL = SUMMABLE | RISING
#: Hosts' clocks differ: a period is closed to the backfill's SQL path only this long
#: after the last instant live ingest (on another host) could still count into it.
CLOCK_MARGIN = timedelta(minutes=10)
#: How long a customer's entitlement views are kept between batches, in seconds: an
#: import's batches each touch most of its customers, and reading every period of
#: every grant again each batch was most of its cost. An operator's change (a
#: suspension, a new grant) reaches a running import within this time; the period
#: rows a backfill creates are the calendar's terms the views compute anyway.
VIEWS_TTL = 10.0


class BackfillRacedError(UnavailableError):
    """Other batches kept logging this batch's events first; retry the batch."""


@dataclass(frozen=True, slots=True)
class Candidate:
    view: EntitlementView
    period: Period

    @property
    def key(self) -> PeriodKey:
        return (self.view.id, self.period.start)


@dataclass(slots=True)
class BackfillReport:
    """The outcome of every event of a batch, in input order."""

    outcomes: list[Outcome]
    reasons: list[str | None]
    #: Events accepted through the live path (a period still open).
    live: int = 0
    dead_lettered: int = 0
    #: The batch had been applied before (a redelivery): nothing was counted again.
    applied_before: bool = False
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.counts = Counter(o.value for o in self.outcomes)


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # pragma: no cover - no user name (a bare container)
        return "cli:unknown"


class BackfillService:
    def __init__(
        self,
        store: BackfillStore,
        live: UsageCounter,
        log: EventLog,
        dead_letters: DeadLetterStore,
        meters: MeterCatalog,
        *,
        late_window: timedelta,
        future_skew: timedelta,
    ) -> None:
        """``live`` counts through ``ingest.lua`` with a late window of
        ``BACKFILL_HORIZON`` (the runtime builds it)."""
        self.store = store
        self.live = live
        self.log = log
        self.dead_letters = dead_letters
        self.meters = meters
        self.late_window = late_window
        self.future_skew = future_skew
        self._views: dict[CustomerFeature, tuple[float, list[EntitlementView]]] = {}
        #: each entitlement's creation time (read with its view)
        self._created: dict[uuid.UUID, datetime] = {}

    def open(self, org: str, actor: str, via: str, now: datetime, events: int = 0) -> uuid.UUID:
        """Start a backfill: its audit row (who, when, how many)."""
        return self.store.open(org, actor, via, now, events)

    def backfill(
        self,
        payloads: Sequence[Any],
        *,
        org: str,
        backfill_id: uuid.UUID,
        batch_no: int,
        now: datetime,
        count_events: bool = True,
    ) -> BackfillReport:
        """Count one batch of a backfill, once (a batch applied before counts
        nothing again). ``count_events``: add the batch's size to the audit's
        ``events`` (the API counts them at the request)."""
        n = len(payloads)
        outcomes: list[Outcome | None] = [None] * n
        reasons: list[str | None] = [None] * n
        parsed_at: dict[int, UsageEvent | RawEvent] = {}
        results: dict[int, list[tuple[Outcome, str | None]]] = {}
        items: list[tuple[int, UsageEvent]] = []
        org_meters: OrgMeters | None = None
        refreshed = False
        for index, payload in enumerate(payloads):
            parsed = self._parse(payload, org, now)
            if isinstance(parsed, InvalidEvent):
                outcomes[index], reasons[index] = Outcome.INVALID, parsed.reason
                continue
            parsed_at[index] = parsed
            if org_meters is None:
                org_meters = self.meters.of(org)
            if not org_meters.knows(parsed) and not refreshed:
                # a feature created since the list was read (at most once a batch)
                org_meters, refreshed = self.meters.refresh(org), True
            results[index] = []
            # history predates the meters: an operator's import feeds every meter of
            # its type that exists, as a replay does (dedupe is per item, id + feature)
            for item in items_of(parsed, org_meters, every_meter=True):
                if isinstance(item, UsageEvent):
                    items.append((index, item))
                else:
                    results[index].append((item[0], item[1]))

        applied_before, live_accepted = self._count(items, results, backfill_id, batch_no, now,
                                                    outcomes, n if count_events else 0)  # fmt: skip
        for index, item_results in results.items():
            outcomes[index], reasons[index] = _combined(item_results)
        final = [o if o is not None else Outcome.INVALID for o in outcomes]
        dead = [
            _dead_letter(payloads[i], final[i], reasons[i], parsed_at.get(i), org)
            for i in range(n)
            if final[i].is_dead_letter
        ]
        report = BackfillReport(final, reasons, live=live_accepted, applied_before=applied_before)
        report.dead_lettered = self.dead_letters.add(dead, now) if dead else 0
        return report

    # -- steps ------------------------------------------------------------------------

    def _parse(self, payload: Any, org: str, now: datetime) -> UsageEvent | RawEvent | InvalidEvent:
        if isinstance(payload, dict) and "org" in payload and payload["org"] != org:
            return InvalidEvent(payload, f"org {str(payload['org'])[:64]!r} is not {org!r}")
        parsed = parse_event(payload, received_at=now, org=org)
        if not isinstance(parsed, InvalidEvent) and parsed.time > now + self.future_skew:
            return InvalidEvent(
                payload, f"time {parsed.time.isoformat()} is in the future (beyond clock skew)"
            )
        return parsed

    def _count(
        self,
        items: list[tuple[int, UsageEvent]],
        results: dict[int, list[tuple[Outcome, str | None]]],
        backfill_id: uuid.UUID,
        batch_no: int,
        now: datetime,
        outcomes: list[Outcome | None],
        events: int,
    ) -> tuple[bool, int]:
        """Judge and count the items; returns (applied before, events counted live)."""
        #: what the live path answered, kept across rounds (a round that lost a race
        #: is planned again, and its live counts are done already)
        counted_live: dict[int, tuple[Outcome, str | None]] = {}
        for _ in range(MAX_PLAN_ROUNDS):
            verdicts: dict[int, tuple[Outcome, str | None]] = {}
            fresh = self._fresh(items, verdicts)
            # counted live in a round before: found now by its identity, still ours
            verdicts.update({k: v for k, v in counted_live.items() if k not in fresh})
            views = self._views_of({(e.org, e.customer, e.feature) for _, e in fresh.values()})
            cutoff = self._closed_before(now)
            closed: dict[int, list[Candidate]] = {}
            open_: list[int] = []
            for k, (_, item) in fresh.items():
                cands, suspended = candidates(views[(item.org, item.customer, item.feature)], item)
                closing = [c for c in cands if not _open_at(c, cutoff)]
                if not cands:
                    verdicts[k] = _no_candidate(item, suspended)
                elif any(c.view.rolls_over for c in closing):
                    verdicts[k] = (Outcome.INVALID, _carry_final(item))
                elif item.aggregation in RECORDED and any(map(self._owned, cands)):
                    # periods no live event ever reached: counted from the records kept
                    # of them, whatever the flush's lag (they hold nothing in Redis)
                    if all(map(self._owned, cands)):
                        closed[k] = cands
                    else:
                        verdicts[k] = (Outcome.INVALID, _owned_in_part(item))
                elif len(closing) < len(cands):
                    open_.append(k)
                elif item.aggregation not in COUNTED_IN_SQL:
                    verdicts[k] = (Outcome.INVALID, _not_countable(item))
                else:
                    closed[k] = cands
            live_parts = self._count_live(items, open_, verdicts, counted_live, now)
            templates = {k: _identity(items[k][1], now) for k in closed}
            counts = _counts(items, verdicts, closed, outcomes, results, events)
            try:
                applied = self.store.apply(
                    backfill_id,
                    batch_no,
                    now,
                    periods=[
                        NewPeriod(items[k][1].org, c.view.id, c.period)
                        for k, cands in closed.items()
                        for c in cands
                    ],
                    plan=functools.partial(_plan, items, closed, templates),
                    levels=_keys_of(items, closed, LEVELS),
                    latest=_keys_of(items, closed, {Aggregation.LATEST}),
                    unique=_values_asked(items, closed),
                    live=live_parts,
                    counts=counts,
                )
            except BatchRaced:
                continue
            for k, verdict in verdicts.items():
                results[items[k][0]].append(verdict)
            for k in closed:
                outcome = Outcome.ACCEPTED if applied is not None else Outcome.DUPLICATE
                results[items[k][0]].append((outcome, None))
            if applied is None:
                self._audit_live_of_a_copy(items, counted_live, backfill_id, now)
            return applied is None, counts.live
        raise BackfillRacedError("other batches kept logging this batch's events; retry")

    def _audit_live_of_a_copy(
        self,
        items: list[tuple[int, UsageEvent]],
        counted_live: dict[int, tuple[Outcome, str | None]],
        backfill_id: uuid.UUID,
        now: datetime,
    ) -> None:
        """Another copy of this batch applied it (two deliveries at once): the events
        this copy counted through the live path (the script accepts each event once,
        whichever copy asks first) are accepted ones of the audit, which the other
        copy's counts hold as duplicates (the script answered it so)."""
        events = {
            items[k][0] for k, (outcome, _) in counted_live.items() if outcome is Outcome.ACCEPTED
        }
        if events:
            n = len(events)
            self.store.add_counts(
                backfill_id, BackfillCounts(accepted=n, duplicates=-n, live=n), now
            )

    def _closed_before(self, now: datetime) -> datetime:
        """Periods that ended before this hold no unflushed count and take no more
        live usage (the rule of ``BalanceService.history``): the oldest write not yet
        flushed, or now, less the late window and ``CLOCK_MARGIN``."""
        oldest = self.live.counters.flush_lag_since()
        since = now if oldest is None else min(now, from_epoch_micros(oldest))
        return since - self.late_window - CLOCK_MARGIN

    def _views_of(self, keys: set[CustomerFeature]) -> dict[CustomerFeature, list[EntitlementView]]:
        """Each customer's views in burn-down order, read again after ``VIEWS_TTL``."""
        clock = time.monotonic()
        if len(self._views) > 100_000:  # bounded: an import of many customers
            self._views.clear()
            self._created.clear()
        kept = {k: self._views.get(k) for k in keys}
        stale = {k for k, entry in kept.items() if entry is None or clock - entry[0] > VIEWS_TTL}
        for key, found in self.store.views(stale, self._created).items():
            self._views[key] = (clock, sorted(found, key=burn_down_order))
        return {k: self._views[k][1] for k in keys}

    def _owned(self, cand: Candidate) -> bool:
        """Whether only the backfill ever counted (or could count) ``cand``'s period:
        it ended before its grant was created less the late window and
        ``CLOCK_MARGIN``, so every live event timed in it was late from the start.
        (The rule holds as long as the late window was never set longer since.)"""
        end = cand.period.end
        created = self._created.get(cand.view.id)
        if end is None or created is None:
            return False
        return end <= created - self.late_window - CLOCK_MARGIN

    def _fresh(
        self, items: list[tuple[int, UsageEvent]], verdicts: dict[int, tuple[Outcome, str | None]]
    ) -> dict[int, tuple[int, UsageEvent]]:
        """The items not seen before: in this batch, the backfill log or the event log
        (the others are duplicates)."""
        identities = [(e.org, e.source, e.id) for _, e in items]
        known = self.store.known(identities) | set(self.log.find(identities))
        seen: set[tuple[str, str, str]] = set()
        fresh: dict[int, tuple[int, UsageEvent]] = {}
        for k, (index, item) in enumerate(items):
            identity = (item.org, item.source, item.id)
            if identity in known or identity in seen:
                verdicts[k] = (Outcome.DUPLICATE, None)
            else:
                fresh[k] = (index, item)
            seen.add(identity)
        return fresh

    def _count_live(
        self,
        items: list[tuple[int, UsageEvent]],
        open_: list[int],
        verdicts: dict[int, tuple[Outcome, str | None]],
        counted_live: dict[int, tuple[Outcome, str | None]],
        now: datetime,
    ) -> list[LogPart]:
        """Count the items whose period is still open through ``ingest.lua`` (those
        not counted in an earlier round); returns the identity rows of those it
        counted (now or before)."""
        todo = [k for k in open_ if k not in counted_live]
        codes = self.live.count([items[k][1] for k in todo], now) if todo else []
        for k, code in zip(todo, codes, strict=True):
            outcome = OUTCOMES[code]
            reason = _live_reason(items[k][1], outcome) if outcome.is_dead_letter else None
            counted_live[k] = (outcome, reason)
        identities = []
        for k in open_:
            verdicts[k] = counted_live[k]
            if verdicts[k][0] in (Outcome.ACCEPTED, Outcome.DUPLICATE):
                identities.append(_identity(items[k][1], now))
        return identities


def candidates(views: Sequence[EntitlementView], item: UsageEvent) -> tuple[list[Candidate], bool]:
    """The periods ``item`` burns down, in order (``views`` in burn-down order), as
    ``ingest.lua``'s ``resolve`` (``core/burn_down.candidates_at``, its twin): the
    asked entitlement only, usable at the event's time, its dimensions matching;
    and whether a suspension refused it. A summarised first term has the grant's
    quantity (``_with_term_quantity``)."""
    found, suspended = candidates_at(views, item.time, item.data, item.entitlement_id)
    return [Candidate(c.view, _with_term_quantity(c.view, c.period)) for c in found], suspended


def _with_term_quantity(view: EntitlementView, period: Period) -> Period:
    """A renewing entitlement's first term (no stored row) has the grant's quantity;
    the renewed ones ``renewal_quantity`` (``period_at`` gives those)."""
    renewal = view.renewal
    if (
        renewal is not None
        and period.start == renewal.anchor
        and all(p.start != period.start for p in view.periods)
    ):
        return Period(period.start, period.end, view.quantity)
    return period


def _identity(item: UsageEvent, now: datetime) -> LogPart:
    """The event's row with no entitlement: the identity of an event counted live, and
    the template of a closed one's parts."""
    return LogPart(
        org=item.org,
        source=item.source,
        id=item.id,
        part=0,
        time=item.time,
        customer=item.customer,
        feature=item.feature,
        entitlement_id=None,
        period_start=None,
        quantity=item.quantity,
        event_quantity=item.quantity,
        target=item.entitlement_id,
        received_at=now,
        data=dict(item.data),
    )


def _plan(
    items: list[tuple[int, UsageEvent]],
    closed: dict[int, list[Candidate]],
    templates: dict[int, LogPart],
    used: dict[PeriodKey, Decimal],
    records: PeriodRecords,
) -> list[LogPart]:
    """The parts of each closed item in order, as ``ingest.lua``'s ``resolve`` plans
    them: a sum burns down (``_sum_shares``), a MAX sample raises each candidate's
    figure to its share of the level (``_level_moves``), a LATEST one sets it where
    it is later than the period's latest (``_latest_moves``), a UNIQUE_COUNT value
    new to every candidate burns one down (``_unique_shares``). ``used`` (each
    period's figure) and ``records`` move as parts are planned, so the items of one
    batch see each other."""
    parts: list[LogPart] = []
    for k, cands in closed.items():
        item = items[k][1]
        if item.aggregation in RISING:
            shares = _level_moves(item, cands, used)
        elif item.aggregation is Aggregation.LATEST:
            shares = _latest_moves(item, cands, used, records.latest)
        elif item.aggregation is Aggregation.UNIQUE_COUNT:
            shares = _unique_shares(item, cands, used, records.values)
        else:
            shares = _sum_shares(item, cands, used)
        if not shares:  # it moves nothing: logged on the first candidate with 0
            shares.append((cands[0], Decimal(0)))
        template = templates[k]
        for part, (cand, take) in enumerate(shares):
            parts.append(
                LogPart(
                    **{
                        **_fields(template),
                        "part": part,
                        "entitlement_id": cand.view.id,
                        "period_start": cand.period.start,
                        "quantity": take,
                    }
                )
            )
    return parts


def _sum_shares(
    item: UsageEvent, cands: list[Candidate], used: dict[PeriodKey, Decimal]
) -> list[tuple[Candidate, Decimal]]:
    """``ingest/burn_down.lua``'s ``plan_sum``: each candidate takes what room its
    period has left, the last takes the rest (overage)."""
    left = item.quantity
    shares: list[tuple[Candidate, Decimal]] = []
    for j, cand in enumerate(cands):
        if left <= 0:
            break
        take = left
        limit = cand.period.quantity
        if j < len(cands) - 1 and limit is not None:
            room = max(limit - used.get(cand.key, Decimal(0)), Decimal(0))
            take = min(room, take)
        if take > 0:
            shares.append((cand, take))
            used[cand.key] = used.get(cand.key, Decimal(0)) + take
            left -= take
    return shares


def _keys_of(
    items: list[tuple[int, UsageEvent]],
    closed: dict[int, list[Candidate]],
    aggregations: Collection[Aggregation],
) -> set[PeriodKey]:
    """The periods of the closed items of these aggregations."""
    return {
        c.key
        for k, cands in closed.items()
        if items[k][1].aggregation in aggregations
        for c in cands
    }


def _values_asked(
    items: list[tuple[int, UsageEvent]], closed: dict[int, list[Candidate]]
) -> dict[PeriodKey, set[str]]:
    """Of each UNIQUE_COUNT period, the values the batch's items count in it (or in
    another candidate: a value counted is held by every candidate's period)."""
    asked: dict[PeriodKey, set[str]] = {}
    for k, cands in closed.items():
        value = items[k][1].unique_value
        if items[k][1].aggregation is Aggregation.UNIQUE_COUNT and value is not None:
            for c in cands:
                asked.setdefault(c.key, set()).add(value)
    return asked


def _limits(cands: list[Candidate]) -> list[int]:
    """Each candidate's limit in units of its feature's scale; -1 unlimited."""
    return [
        -1 if c.period.quantity is None else to_units(c.period.quantity, c.view.scale)
        for c in cands
    ]


def _level_moves(
    item: UsageEvent, cands: list[Candidate], used: dict[PeriodKey, Decimal]
) -> list[tuple[Candidate, Decimal]]:
    """A MAX sample (``resolve``'s ``M`` branch): its level is shared down the
    candidates like a sum (``level_share``: each takes up to its limit, the last the
    rest), and each period keeps the larger of its figure and its share. A part is
    what it moved (share - figure, where the share is larger), so the log still sums
    to the figure. Exact whatever history the log no longer holds: a figure only
    rises, and the largest share any sample gave is the same in any order."""
    limits = _limits(cands)
    level = item.units
    moves: list[tuple[Candidate, Decimal]] = []
    for j, cand in enumerate(cands):
        share = from_units(level_share(limits, j, level), item.scale)
        figure = used.get(cand.key, Decimal(0))
        if share > figure:
            moves.append((cand, share - figure))
            used[cand.key] = share
    return moves


def _latest_moves(
    item: UsageEvent,
    cands: list[Candidate],
    used: dict[PeriodKey, Decimal],
    latest: dict[PeriodKey, tuple[datetime, str]],
) -> list[tuple[Candidate, Decimal]]:
    """A LATEST sample (``resolve``'s ``L`` branch) in periods only the backfill
    counts: each candidate later than its period's latest sample (by time, then event
    key) takes it, its figure becoming its share of the level; a part is what the
    figure moved (down as well as up), so the log sums to it."""
    limits = _limits(cands)
    level = item.units
    mark = (item.time, event_key(item.org, item.source, item.id))
    moves: list[tuple[Candidate, Decimal]] = []
    for j, cand in enumerate(cands):
        seen = latest.get(cand.key)
        if seen is not None and mark <= seen:
            continue
        latest[cand.key] = mark
        share = from_units(level_share(limits, j, level), item.scale)
        move = share - used.get(cand.key, Decimal(0))
        used[cand.key] = share
        if move:
            moves.append((cand, move))
    return moves


def _unique_shares(
    item: UsageEvent,
    cands: list[Candidate],
    used: dict[PeriodKey, Decimal],
    values: dict[PeriodKey, set[str]],
) -> list[tuple[Candidate, Decimal]]:
    """A UNIQUE_COUNT value (``resolve``'s ``U`` branch) in periods only the backfill
    counts: held by any candidate's period, it counts nothing; new, it burns one
    down as a sum and is held by every candidate's period."""
    value = item.unique_value
    assert value is not None  # items_of gives every UNIQUE_COUNT item its value
    if any(value in values.get(c.key, ()) for c in cands):
        return []
    shares = _sum_shares(item, cands, used)
    for c in cands:
        values.setdefault(c.key, set()).add(value)
    return shares


def _fields(part: LogPart) -> dict[str, Any]:
    return {name: getattr(part, name) for name in LogPart.__slots__}


def _counts(
    items: list[tuple[int, UsageEvent]],
    verdicts: dict[int, tuple[Outcome, str | None]],
    closed: dict[int, list[Candidate]],
    outcomes: list[Outcome | None],
    decided: dict[int, list[tuple[Outcome, str | None]]],
    events: int,
) -> BackfillCounts:
    """The audit's increments, per event (an event's items combined, with those
    ``items_of`` decided)."""
    by_event: dict[int, list[Outcome]] = {
        index: [o for o, _ in found] for index, found in decided.items() if found
    }
    live: set[int] = set()
    for k, (outcome, _) in verdicts.items():
        by_event.setdefault(items[k][0], []).append(outcome)
    for k in closed:
        by_event.setdefault(items[k][0], []).append(Outcome.ACCEPTED)
    for k, (outcome, _) in verdicts.items():
        if outcome is Outcome.ACCEPTED and k not in closed:
            live.add(items[k][0])
    combined = Counter(combined_outcome(o) for o in by_event.values())
    refused = sum(1 for o in outcomes if o is not None)
    dead = sum(n for o, n in combined.items() if o.is_dead_letter) + refused
    return BackfillCounts(
        events=events,
        accepted=combined[Outcome.ACCEPTED],
        duplicates=combined[Outcome.DUPLICATE],
        dead_lettered=dead,
        live=len(live),
    )


def _open_at(cand: Candidate, cutoff: datetime) -> bool:
    """Whether live ingest still counts ``cand``'s period (it ends after ``cutoff``)."""
    return cand.period.end is None or cand.period.end > cutoff


def _carry_final(item: UsageEvent) -> str:
    """Why an item into a closed period of a grant that rolls over is refused."""
    return (
        f"customer {item.customer!r}'s grant of {item.feature!r} rolls over: what its term"
        f" of {item.time.isoformat()} left became final when the term closed (the late"
        " window) and is carried into the terms after it, so usage counted into it now"
        " would change limits that other usage was judged against"
    )


def _no_candidate(item: UsageEvent, suspended: bool) -> tuple[Outcome, str]:
    if suspended:
        return Outcome.SUSPENDED, (
            f"the entitlement of customer {item.customer!r} for {item.feature!r} was suspended"
            f" at {item.time.isoformat()}"
        )
    return Outcome.NO_ENTITLEMENT, (
        f"customer {item.customer!r} had no usable entitlement for feature {item.feature!r}"
        f" at {item.time.isoformat()}"
    )


def _owned_in_part(item: UsageEvent) -> str:
    return (
        f"feature {item.feature!r} aggregates by {item.aggregation.value}: at"
        f" {item.time.isoformat()} it falls both in a period only the backfill counts"
        " (it ended before its grant was created, less the late window) and in one live"
        " ingest could count, and no one record of the periods judges it for both"
    )


def _not_countable(item: UsageEvent) -> str:
    """Why a LATEST or UNIQUE_COUNT item whose periods are all closed, and were open
    to live ingest once, is refused."""
    if item.aggregation is Aggregation.LATEST:
        why = (
            "a closed LATEST period keeps its share of the latest sample it took, and which"
            " sample that was (its time and event key) is not kept once the period closed,"
            " so whether this older or newer sample replaces it cannot be known"
        )
    else:
        why = (
            "a closed UNIQUE_COUNT period counts each value once, and the values it counted"
            " are not kept once the period closed (their set expires a day after its late"
            " window), so whether this value is new to it cannot be known"
        )
    return (
        f"feature {item.feature!r} aggregates by {item.aggregation.value}: {why}."
        " Its history is counted while its period is within the late window, or in a"
        " period that ended before its grant was created less the late window (only"
        " the backfill counts those, from what it keeps of them)"
    )


def _live_reason(item: UsageEvent, outcome: Outcome) -> str:
    if outcome is Outcome.INVALID:
        return (
            f"counting {item.quantity} would carry a counter of feature {item.feature!r}"
            " past what it holds exactly"
        )
    return _no_candidate(item, outcome is Outcome.SUSPENDED)[1]


def _combined(item_results: list[tuple[Outcome, str | None]]) -> tuple[Outcome, str | None]:
    if len(item_results) == 1:
        return item_results[0]
    outcome = combined_outcome([o for o, _ in item_results])
    if not outcome.is_dead_letter:
        return outcome, None
    return outcome, "; ".join(r or o.value for o, r in item_results if o.is_dead_letter)


def _dead_letter(
    payload: Any,
    outcome: Outcome,
    reason: str | None,
    event: UsageEvent | RawEvent | None,
    org: str,
) -> DeadLetterRecord:
    return DeadLetterRecord(
        reason=outcome.value,
        detail=f"backfill: {reason or outcome.value}",
        payload=with_time(payload, event) if event is not None else dead_letter_payload(payload),
        org_id=org,
        source=event.source if event else None,
        event_id=event.id if event else None,
    )
