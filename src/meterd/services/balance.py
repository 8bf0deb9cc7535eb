"""The real-time read: consumed = flushed (database) + pending (Redis).

Redis and the database cannot be read in one snapshot, so the read is
optimistic: read Redis atomically (pending, the batch in flight and the flush
epoch), then the database in one statement (flushed values and whether the
in-flight batch is committed), and retry if a new flush began in between.

The usage history (``history``: every period of an entitlement) is read the same
way for the periods that can still hold unflushed usage, so it agrees with the
value read before and after a flush.

The value rule (``value_of``: whether the customer has access, the state that
decides it, the totals over usable entitlements) is here too, so every edge
(the value and reserve routes, the benchmarks) shows the same answer and only
formats it.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from meterd.core.domain import (
    Balance,
    EffectiveState,
    EntitlementView,
    Period,
    Status,
    effective_state,
)
from meterd.core.errors import UnavailableError
from meterd.core.lifecycle import (
    extend_term,
    limit_reads,
    limit_units,
    period_at,
    renews_at,
    status_at,
)
from meterd.core.quantity import from_units, to_units
from meterd.core.redis_keys import period_field
from meterd.core.timeutil import from_epoch_micros
from meterd.services.resolution import ResolutionCache
from meterd.storage.counters import CounterStore
from meterd.storage.holds import HoldStore
from meterd.storage.rate_limits import send_alone
from meterd.storage.resolution import decode_resolution
from meterd.storage.resolution_views import ResolutionViewStore
from meterd.storage.usage import UsageStore

#: A flush starts every few seconds, so a second attempt nearly always succeeds; the
#: bound matters only when flushes run back to back (tests, a flush backlog).
_MAX_ATTEMPTS = 50


class BalanceError(UnavailableError):
    """Flushes kept racing the read; try again."""


PeriodKey = tuple[uuid.UUID, datetime]

#: The most periods ``periods_open_since`` walks: a 1-DAY term over a late window
#: (or a flush stalled) of almost three years. The current period is always read.
MAX_OPEN_PERIODS = 1000


@dataclass(frozen=True, slots=True)
class PeriodUsage:
    """One period of an entitlement's usage history, in real time."""

    period: Period
    #: Flushed plus not yet flushed, as every other read counts it.
    consumed: Decimal
    #: What this renewed term carried from the one before (its ``period.quantity``
    #: includes it), as of now: a late event into the term before still changes it.
    #: None: the entitlement does not roll over, or the period is not a renewed term.
    rolled_over: Decimal | None = None


#: The state of a customer with no entitlement for the feature.
NO_ENTITLEMENT = "NO_ENTITLEMENT"


@dataclass(frozen=True, slots=True)
class RealTimeValue:
    """A customer's value of one feature: what the value route shows."""

    #: Usage now would count, within some quantity (a usable entitlement not exhausted).
    has_access: bool
    #: The state that decides access: the first usable open entitlement's; EXHAUSTED
    #: when every usable one is; else the first entitlement's; else ``NO_ENTITLEMENT``.
    state: str
    #: Sums over the usable entitlements (quantity None: one of them is unlimited).
    quantity: Decimal | None
    consumed: Decimal
    remaining: Decimal | None
    overage: Decimal
    #: Every entitlement's balance, in the order given (burn-down order when read).
    balances: tuple[Balance, ...]
    #: Units live holds keep (they reduce ``remaining``; only what is settled is
    #: consumed).
    held: Decimal = Decimal(0)
    #: What the live children of the usable entitlements hold (allotments: each
    #: carve already lowered ``quantity``); None: none of them ever allotted.
    allotted: Decimal | None = None


def value_of(balances: Sequence[Balance]) -> RealTimeValue:
    """The value of ``balances`` (one customer's entitlements for one feature)."""
    usable = [b for b in balances if b.usable]
    open_ = [b for b in usable if b.state is not EffectiveState.EXHAUSTED]
    if open_:
        state = open_[0].state.value
    elif usable:
        state = EffectiveState.EXHAUSTED.value
    elif balances:
        state = balances[0].state.value
    else:
        state = NO_ENTITLEMENT
    unlimited = any(b.quantity is None for b in usable)
    quantity = None if unlimited else sum((b.quantity or Decimal(0) for b in usable), Decimal(0))
    consumed = sum((b.consumed for b in usable), Decimal(0))
    held = sum((b.held for b in usable), Decimal(0))
    carved = [b.allotted for b in usable if b.allotted is not None]
    return RealTimeValue(
        has_access=bool(open_),
        state=state,
        quantity=quantity,
        consumed=consumed,
        remaining=None if quantity is None else max(quantity - consumed - held, Decimal(0)),
        overage=sum((b.overage for b in usable), Decimal(0)),
        balances=tuple(balances),
        held=held,
        allotted=sum(carved, Decimal(0)) if carved else None,
    )


def periods_open_since(view: EntitlementView, since: datetime, until: datetime) -> list[Period]:
    """The periods of ``view`` (stored or on the calendar) that contain an instant of
    ``[since, until]``: where usage accepted since ``since`` may have landed. At most
    ``MAX_OPEN_PERIODS``, oldest first. Each step looks only at the stored periods
    that can contain such an instant (``_open_at``), not at the whole history."""
    view = replace(view, periods=_open_at(view.periods, since))
    found: list[Period] = []
    moment = since
    while len(found) < MAX_OPEN_PERIODS:
        period = period_at(view, moment)
        if period is None:  # before the first period: go to where it starts
            starts = [p.start for p in view.periods] or [view.starts_at]
            first = min(starts)
            if first <= moment or first > until:
                break
            moment = first
            continue
        found.append(period)
        if period.end is None or period.end > until or period.end <= moment:
            break
        moment = period.end
    return found


def _open_at(periods: Sequence[Period], since: datetime) -> tuple[Period, ...]:
    """The periods ``period_at`` chooses among for an instant at or after ``since``:
    those that end after it, and the latest that starts by it (usage after its end
    may still land in it: grace; a renewing term starts where it ends)."""
    latest = max((p for p in periods if p.start <= since), key=lambda p: p.start, default=None)
    return tuple(p for p in periods if p is latest or p.end is None or p.end > since)


def current_period(view: EntitlementView, now: datetime) -> Period:
    """The period of ``view`` containing ``now``; before it starts, its first one."""
    found = period_at(view, now)
    if found is not None:
        return found
    first = min(view.periods, key=lambda p: p.start, default=None)
    return first or Period(view.starts_at, view.ends_at, view.quantity)


def rolled(view: EntitlementView, period: Period, units: dict[str, int]) -> Period:
    """``period`` with its effective quantity: for a renewed term of an entitlement
    that rolls over, what the term before carried added (``lifecycle.limit_units``
    on the totals ``units`` by field, which hold every period ``limit_reads``
    names). Only for showing: a period so changed is never walked again."""
    if not view.rolls_over or period.quantity is None:
        return period
    limit = limit_units(view, period, lambda p: units.get(period_field(view.id, p.start), 0))
    return replace(period, quantity=from_units(limit, view.scale))


def _with_carries(view: EntitlementView, usages: list[PeriodUsage]) -> list[PeriodUsage]:
    """The history with each renewed term's carry (``rolled``), from the consumptions
    it shows (a term it leaves out consumed nothing)."""
    if not view.rolls_over:
        return usages
    units = {
        period_field(view.id, u.period.start): to_units(u.consumed, view.scale) for u in usages
    }
    shown = []
    for usage in usages:
        base = usage.period.quantity
        period = rolled(view, usage.period, units)
        carry = None
        if base is not None and period.quantity is not None and renews_at(view, period.start):
            carry = period.quantity - base
        shown.append(replace(usage, period=period, rolled_over=carry))
    return shown


def rollover_fields(view: EntitlementView, period: Period) -> list[str]:
    """The fields whose totals ``rolled`` needs for ``period``."""
    return [period_field(view.id, p.start) for p in limit_reads(view, period)]


def balance_of(
    view: EntitlementView,
    now: datetime,
    period: Period,
    consumed: int,
    split: tuple[int, int] | None,
    held: int = 0,
) -> Balance:
    """The balance of ``view`` at ``now``: ``consumed`` units (of its feature's scale)
    of ``period`` (``split``: flushed and pending, when read from both stores) and
    ``held`` units live holds keep on it (a period all consumed or held is
    EXHAUSTED: a new reservation would be denied)."""
    status = status_at(view, now)
    scale = view.scale
    used = from_units(consumed, scale)
    kept = from_units(held, scale)
    ends_at, grace_until = view.ends_at, view.grace_until
    if view.renewal is not None and period.end is not None and period.start <= now:
        ends_at, grace_until = extend_term(view.ends_at, view.grace_until, period.end)
    return Balance(
        entitlement_id=view.id,
        period_start=period.start,
        period_end=period.end,
        quantity=period.quantity,
        consumed=used,
        flushed=from_units(split[0], scale) if split else None,
        pending=from_units(split[1], scale) if split else None,
        status=status,
        ends_at=ends_at,
        grace_until=grace_until,
        state=effective_state(status, view.billing_type, period.quantity, used + kept),
        usable=status in (Status.ACTIVE, Status.GRACE),
        filters=view.filters,
        held=kept,
        allotted=view.allotted,
    )


T = TypeVar("T")


class Gate(Protocol):
    """What a read must pass before it answers: the API's rate limit and permission
    (``api.auth.Caller``). The value read passes it once, on every path that answers
    and before any database read: with ``admit_with`` sending its admission and the
    read's last Redis command in one round trip, else with ``admit``."""

    def admit(self) -> object:
        """Admit the read, or raise why not."""
        ...

    def admit_with(
        self, client: object, command: Callable[[Any], None], reply: Callable[[Any], T]
    ) -> T:
        """Admit the read, sending the command ``command`` queues on a pipeline of
        ``client`` in the same round trip; ``reply`` of its reply."""
        ...


class _LivePlan:
    """What ``BalanceService.live`` reads for some resolution data at ``now``: each
    entitlement's current period, and the fields of the totals it needs (those of
    the terms before too, when what they carried counts)."""

    __slots__ = ("fields", "periods", "views", "wanted")

    def __init__(self, views: list[EntitlementView], now: datetime) -> None:
        self.views = views
        self.periods = [current_period(view, now) for view in views]
        self.fields = [
            period_field(v.id, p.start) for v, p in zip(views, self.periods, strict=True)
        ]
        earlier = [
            f for v, p in zip(views, self.periods, strict=True) for f in rollover_fields(v, p)
        ]
        self.wanted = [*self.fields, *earlier]

    def balances(
        self, now: datetime, totals: dict[str, int], held: dict[str, int]
    ) -> list[Balance]:
        periods = [rolled(v, p, totals) for v, p in zip(self.views, self.periods, strict=True)]
        return [
            balance_of(view, now, period, totals[field], None, held.get(field, 0))
            for view, period, field in zip(self.views, periods, self.fields, strict=True)
        ]


#: The most (org, customer, feature) whose decoded resolution data a process keeps.
MAX_KEPT = 4096


class KeptResolutions:
    """The resolution data this process read last per (org, customer, feature), as
    read (bytes) and decoded: never trusted alone, only compared with the data
    Redis holds in the same round trip (``BalanceService.live``). At most
    ``MAX_KEPT``: the oldest kept goes first. Thread-safe (each step is one dict
    operation)."""

    def __init__(self, limit: int = MAX_KEPT) -> None:
        self.limit = limit
        self._kept: dict[tuple[str, str, str], tuple[bytes, list[EntitlementView]]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, key: tuple[str, str, str]) -> tuple[bytes, list[EntitlementView]] | None:
        return self._kept.get(key)

    def keep(self, key: tuple[str, str, str], raw: bytes, views: list[EntitlementView]) -> None:
        self._kept.pop(key, None)
        while len(self._kept) >= self.limit:
            try:
                self._kept.pop(next(iter(self._kept)))
            except (StopIteration, KeyError, RuntimeError):  # another thread took it
                break
        self._kept[key] = (raw, views)

    def forget(self, key: tuple[str, str, str]) -> None:
        self._kept.pop(key, None)


class BalanceService:
    def __init__(
        self,
        counters: CounterStore,
        usage: UsageStore,
        views: ResolutionViewStore,
        *,
        late_window: timedelta,
        future_skew: timedelta = timedelta(0),
        resolution: ResolutionCache | None = None,
        holds: HoldStore | None = None,
    ) -> None:
        self.counters = counters
        #: Reads consumed and held units together, freeing expired holds first
        #: (None: no holds are read; consumed only).
        self.holds = holds
        self.usage = usage
        self.views = views
        self.late_window = late_window
        #: How far ahead of its write an event may be timed: usage not yet flushed
        #: may lie in a period that starts up to this long after now.
        self.future_skew = future_skew
        #: Loads a customer's resolution data when ``current`` finds it uncached.
        self.resolution = resolution
        #: The resolution data ``live`` read last, per customer and feature.
        self.kept = KeptResolutions()

    def current(
        self, org: str, customer: str, feature: str, now: datetime, gate: Gate | None = None
    ) -> list[Balance]:
        """From Redis alone when the customer's data is cached (loaded first if it is
        not); the database read is the fallback. ``gate``: passed once (``Gate``)."""
        found, passed = self._live(org, customer, feature, now, gate)
        if found is None and gate is not None and not passed:
            gate.admit()  # before the database
        if found is None and self.resolution is not None:
            self.resolution.fill([(org, customer, feature)], now)
            found = self.live(org, customer, feature, now)
        return found if found is not None else self.balances(org, customer, feature, now)

    def value(
        self, org: str, customer: str, feature: str, now: datetime, gate: Gate | None = None
    ) -> RealTimeValue:
        """The customer's real-time value of ``feature`` (``current``, then ``value_of``)."""
        if gate is None:
            return value_of(self.current(org, customer, feature, now))
        return value_of(self.current(org, customer, feature, now, gate=gate))

    def consumed(
        self, periods: list[PeriodKey], scales: list[int]
    ) -> dict[PeriodKey, tuple[int, int]]:
        """(flushed, not yet flushed) units of each period (of the scale given for
        it), consistent."""
        fields = [period_field(e, s) for e, s in periods]
        for attempt in range(_MAX_ATTEMPTS):
            if attempt >= 2:
                time.sleep(random.uniform(0, 0.001 * attempt))  # step out of a flush's way
            snap = self.counters.pending_snapshot(fields)
            flushed, committed = self.usage.flushed_consumption(periods, snap.inflight_batch)
            if self.counters.flush_epoch() != snap.epoch:
                continue  # a flush began while we read: pending moved, read again
            result = {}
            for key, field, scale in zip(periods, fields, scales, strict=True):
                unflushed = snap.pending[field] + (0 if committed else snap.inflight[field])
                done = flushed.get(key)
                result[key] = (0 if done is None else to_units(done, scale), unflushed)
            return result
        raise BalanceError("flushes kept racing the read")

    def unflushed_since(self, now: datetime) -> datetime:
        """The earliest event time usage not yet flushed can carry: ingest takes events
        at most ``late_window`` old, so the oldest write still outside the database
        (or ``now``, when everything is flushed) less the late window."""
        oldest = self.counters.flush_lag_since()
        written = now if oldest is None else min(now, from_epoch_micros(oldest))
        return written - self.late_window

    def history(
        self, view: EntitlementView, stored: Sequence[tuple[Period, Decimal]], now: datetime
    ) -> list[PeriodUsage]:
        """Every period of ``view`` with its real-time consumption, oldest first.

        ``stored``: the periods the database holds, with their flushed consumption.
        Those that may still hold unflushed usage (ending after ``unflushed_since``),
        the periods on the calendar usage may have opened since then without the
        flush having written them yet (up to ``future_skew`` ahead: an event timed
        in the next term), and the current period are read with ``consumed``
        (flushed and pending in one consistent read); a period on the calendar is
        shown once it has usage, or when it is the current one."""
        since = self.unflushed_since(now)
        current = current_period(view, now)
        open_periods = periods_open_since(view, since, now + self.future_skew)
        live: dict[datetime, Period] = {p.start: p for p in open_periods}
        live[current.start] = current
        flushed_only: list[tuple[Period, Decimal]] = []
        for period, flushed in stored:
            if period.end is None or period.end > since:
                live[period.start] = period
            else:  # ended before any unflushed usage could land in it
                live.pop(period.start, None)
                flushed_only.append((period, flushed))
        starts = sorted(live)
        values = self.consumed([(view.id, start) for start in starts], [view.scale] * len(starts))
        stored_starts = {period.start for period, _ in stored}
        result = [PeriodUsage(period, flushed) for period, flushed in flushed_only]
        for start in starts:
            units = sum(values[(view.id, start)])
            if start in stored_starts or units or start == current.start:
                result.append(PeriodUsage(live[start], from_units(units, view.scale)))
        return sorted(_with_carries(view, result), key=lambda usage: usage.period.start)

    def balances(self, org: str, customer: str, feature: str, now: datetime) -> list[Balance]:
        """The current period of each of the customer's entitlements for a feature."""
        key = (org, customer, feature)
        views, _ = self.views.views([key], usable_after=now - self.late_window)[key]
        found = self.balances_of(views, now)
        if self.holds is not None and views:
            fields = [period_field(v.id, found[v.id].period_start) for v in views]
            _, held = self.holds.live_figures(org, customer, fields, now)
            for view, field in zip(views, fields, strict=True):
                if held.get(field):
                    found[view.id] = replace(
                        found[view.id], held=from_units(held[field], view.scale)
                    )
        return [found[view.id] for view in views]

    def live(
        self, org: str, customer: str, feature: str, now: datetime, gate: Gate | None = None
    ) -> list[Balance] | None:
        """The balances from Redis alone: the cached resolution data and the running
        totals ingest and reserve keep (no SQL), in burn-down order. None when the
        customer's data is not cached: use ``balances``. ``gate``: passed in the
        round trip of the totals when the data is cached, else not.

        The resolution data this process decoded last for the customer and feature
        (``kept``) names the totals to read, so its ``GET`` and that read go in one
        round trip (with the gate's): one round trip in all, or two when the data
        changed since (read again with the new data) or is not kept here yet (the
        ``GET`` alone first). The ``GET`` precedes the read, as when sent alone."""
        return self._live(org, customer, feature, now, gate)[0]

    def _live(
        self, org: str, customer: str, feature: str, now: datetime, gate: Gate | None
    ) -> tuple[list[Balance] | None, bool]:
        """``live``, and whether it passed ``gate`` (always when it found the data)."""
        passed = False
        kept = self.kept.get((org, customer, feature)) if self.holds is not None else None
        if kept is not None:
            found = self._live_kept(org, customer, feature, now, gate, kept)
            if found is not None:
                return found, True
            passed, gate = gate is not None, None  # passed in that round trip
        raw = self.counters.resolution_entry(org, customer, feature)
        if raw is None:
            self.kept.forget((org, customer, feature))
            return None, passed
        views = decode_resolution(raw)
        if views:  # (none: nothing to read with the GET)
            self.kept.keep((org, customer, feature), raw.encode(), views)
        else:
            self.kept.forget((org, customer, feature))
        plan = _LivePlan(views, now)
        if self.holds is None:
            held: dict[str, int] = {}
            if gate is not None:
                gate.admit()
            totals = self.counters.live_totals(org, customer, plan.wanted)
        elif gate is None or not plan.wanted:
            if gate is not None:
                gate.admit()
            # one atomic read: the terms before with the current ones
            totals, held = self.holds.live_figures(org, customer, plan.wanted, now)
        else:  # the same read, in the gate's round trip
            command, reply = self.holds.live_figures_command(org, customer, plan.wanted, now)
            totals, held = gate.admit_with(self.holds.client, command, reply)
        return plan.balances(now, totals, held), True

    def _live_kept(
        self,
        org: str,
        customer: str,
        feature: str,
        now: datetime,
        gate: Gate | None,
        kept: tuple[bytes, list[EntitlementView]],
    ) -> list[Balance] | None:
        """``live`` from the kept resolution data ``kept``: its ``GET`` again, with the
        totals it names, in one round trip (the gate's, when given; it is passed
        whatever the answer). None: the data changed or is gone since it was kept
        (the totals read are dropped; ``live`` reads again)."""
        assert self.holds is not None
        raw_kept, views = kept
        plan = _LivePlan(views, now)  # (views kept are never empty: it reads some)
        resolution_key = self.counters.keys.resolution(org, customer, feature)
        read, figures = self.holds.live_figures_command(org, customer, plan.wanted, now)

        def command(pipeline: Any) -> None:
            pipeline.get(resolution_key)
            read(pipeline)

        def reply(answer: Any) -> tuple[dict[str, int], dict[str, int]] | None:
            if isinstance(answer, Exception):  # Redis answered neither
                raise answer
            raw, figures_reply = answer
            if isinstance(raw, Exception):
                raise raw
            if raw != raw_kept:
                return None
            return figures(figures_reply)

        if gate is None:
            answer = reply(send_alone(self.holds.client, command))
        else:
            answer = gate.admit_with(self.holds.client, command, reply)
        if answer is None:
            return None
        totals, held = answer
        return plan.balances(now, totals, held)

    def balances_of(
        self, views: Sequence[EntitlementView], now: datetime
    ) -> dict[uuid.UUID, Balance]:
        """The current (or, once ended, the last) period of each entitlement, read
        in one consistent snapshot."""
        current = {view.id: current_period(view, now) for view in views}
        wanted = {(view.id, current[view.id].start): view.scale for view in views}
        for view in views:  # the terms before, when what they carried counts
            for p in limit_reads(view, current[view.id]):
                wanted[(view.id, p.start)] = view.scale
        values = self.consumed(list(wanted), list(wanted.values()))
        units = {period_field(e, start): sum(pair) for (e, start), pair in values.items()}
        result = {}
        for view in views:
            period = rolled(view, current[view.id], units)
            flushed, pending = values[(view.id, period.start)]
            result[view.id] = balance_of(view, now, period, flushed + pending, (flushed, pending))
        return result
