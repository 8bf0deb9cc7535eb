"""Resolution data: what the ingest script needs to route usage to entitlements.

The JSON written to ``P:res:{tag}:<feature>`` is a list of the customer's
entitlements for that feature, already in burn-down order (lowest priority,
then soonest end, then oldest), each as::

    {"i": id hex, "s": starts (epoch us),
     "u": usable until (epoch us, -1 = open): the end of grace, else of the
          term; a renewing entitlement has none; a termination cuts it,
     "e": ends_at (epoch us, -1 = open), "g": grace_until (-1 = none),
     "b": "P" pre-paid or "U" pay-per-use,
     "q": quantity (integer units of the feature's scale "k", -1 = unlimited),
     "k": the feature's scale (0-6; limits and counters are in 10^-k units),
     "f": {path: value} dimension filters (absent: none; meterd.core.meters.matches),
     "p": [[start, end (-1 = open), limit (-1 = unlimited), field], ...] stored periods,
     "r": ["m", months, anchor, limit, anchor day, anchor time of day us]
          or ["d", duration us, anchor, limit]
          (renewing only: term k starts at anchor + k terms; limit of renewed periods),
     "o": [rollover max, rollover min, {field: carry}] (renewing with rollover only,
          in units of "k"): a renewed term's limit is its own plus MIN(max, MAX(remaining
          of the term before, min)), computed from the consumptions back to a term
          whose limit is final; "field: carry" are the stored final carries
          (meterd.core.rollover, lifecycle.limit_units, lua/ingest/rollover.lua),
     "x": [[from, to (-1 = still)], ...] suspensions,
     "z": terminated at (epoch us, -1 = not terminated),
     "a": [[rule id, kind "P" | "R" | "C", threshold], ...] the alert rules that
          apply (absent: the org has none, the defaults 80 % and 100 % apply; a
          PERCENT threshold in 10^-4 %, the others in units of "k";
          meterd.core.notifications.AlertRule, lua/ingest/thresholds.lua),
     "c": what its live children hold (units of "k"; absent: it never allotted):
          not read by Lua, only by the value read (services/balance.py)}

Lua numbers are doubles, exact for integers up to 2^53 (epoch microseconds of
years 1685 to 2255): a term's arithmetic in ``ingest.lua`` stays there. A
monthly term's anchor also goes as whole days since the epoch and microseconds
of the day (both small); a term of days is anchored on its boundary at or
before a recent instant (the same boundaries: term k of the one is
term k + n of the other), so an anchor in year 1 with microseconds, or a term
of an hour and 7 microseconds, gives the boundaries Python gives (the cache
anchors it near the instant it writes the entry).

``decode_resolution`` reads it back into the same ``EntitlementView`` the
database gives, so the live read judges state and period with the very
functions the rest of meterd uses (``meterd.core.lifecycle``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from meterd.core.domain import BillingType, EntitlementView, Period, Renewal, Status
from meterd.core.quantity import from_units, to_units
from meterd.core.redis_keys import period_field
from meterd.core.terms import Term
from meterd.core.timeutil import epoch_micros, from_epoch_micros

_FAR_FUTURE = 2**62


def burn_down_order(view: EntitlementView) -> tuple[int, int, int]:
    ends = epoch_micros(view.ends_at) if view.ends_at and view.renewal is None else _FAR_FUTURE
    return (view.priority, ends, view.number)


def _us(moment: datetime | None) -> int:
    return epoch_micros(moment) if moment is not None else -1


def _limit(quantity: Any, scale: int) -> int:
    return to_units(quantity, scale) if quantity is not None else -1


def _renewal(view: EntitlementView, renewal: Renewal, near: datetime | None) -> list[Any]:
    term = renewal.term
    limit = _limit(renewal.quantity, view.scale)
    anchor = epoch_micros(renewal.anchor)
    if term.months:
        day, time_of_day = divmod(anchor, _DAY_US)
        return ["m", term.months, anchor, limit, day, time_of_day]
    # The boundary at or before ``near`` (default: the latest stored period): close
    # to the instants ingest judges, so Lua's doubles hold every boundary exactly.
    if near is None:
        near = max((p.start for p in view.periods), default=view.starts_at)
    rebased = term.start(renewal.anchor, term.index_at(renewal.anchor, near))
    return ["d", term.length // timedelta(microseconds=1), epoch_micros(rebased), limit]


_DAY_US = 86_400_000_000


def _rollover(view: EntitlementView, renewal: Renewal) -> list[Any]:
    finals = {
        period_field(view.id, p.start): to_units(p.rolled_over, view.scale)
        for p in view.periods
        if p.rolled_over is not None
    }
    return [
        to_units(renewal.rollover_max, view.scale),
        to_units(renewal.rollover_min, view.scale),
        finals,
    ]


def encode_view(view: EntitlementView, near: datetime | None = None) -> dict[str, Any]:
    """The entry of one view; ``near``: an instant close to those ingest will judge
    with it (now), where a renewing term of days is anchored."""
    entry: dict[str, Any] = {
        "i": view.id.hex,
        "s": epoch_micros(view.starts_at),
        "u": _us(view.usable_until),
        "e": _us(view.ends_at),
        "g": _us(view.grace_until),
        "b": "U" if view.billing_type is BillingType.PAY_PER_USE else "P",
        "q": _limit(view.quantity, view.scale),
        "p": [
            [
                epoch_micros(p.start),
                _us(p.end),
                _limit(p.quantity, view.scale),
                period_field(view.id, p.start),
            ]
            for p in sorted(view.periods, key=lambda p: p.start)
        ],
        "z": _us(view.terminated_at),
        "k": view.scale,
    }
    if view.filters:
        entry["f"] = dict(view.filters)
    if view.renewal is not None:
        entry["r"] = _renewal(view, view.renewal, near)
        if view.renewal.rolls_over:
            entry["o"] = _rollover(view, view.renewal)
    if view.suspensions:
        entry["x"] = [[epoch_micros(start), _us(end)] for start, end in view.suspensions]
    if view.alert_rules is not None:
        entry["a"] = [list(rule) for rule in view.alert_rules]
    if view.allotted is not None:
        entry["c"] = to_units(view.allotted, view.scale)
    return entry


def encode_resolution(views: Iterable[EntitlementView], near: datetime | None = None) -> str:
    return json.dumps(
        [encode_view(view, near) for view in sorted(views, key=burn_down_order)],
        separators=(",", ":"),
    )


def _moment(us: int) -> datetime | None:
    """-1 is "none"; other negative values are instants before 1970."""
    return None if us == -1 else from_epoch_micros(us)


def _quantity(units: int, scale: int) -> Any:
    return None if units < 0 else from_units(units, scale)


def _decoded_renewal(raw: list[Any] | None, rollover: Any, scale: int) -> Renewal | None:
    if raw is None:
        return None
    kind, value, anchor, limit = raw[:4]
    term = Term(months=value) if kind == "m" else Term(length=timedelta(microseconds=value))
    renewal = Renewal(from_epoch_micros(anchor), term, _quantity(limit, scale))
    if rollover is None:
        return renewal
    return replace(
        renewal,
        rollover_max=from_units(rollover[0], scale),
        rollover_min=from_units(rollover[1], scale),
    )


def _rolled_over(entry: dict[str, Any], field: str, scale: int) -> Any:
    rollover = entry.get("o")
    if rollover is None or field not in rollover[2]:
        return None
    return from_units(rollover[2][field], scale)


def decode_view(entry: dict[str, Any]) -> EntitlementView:
    """An EntitlementView of one entry (burn-down order is the list's order, so
    ``number`` and ``priority`` come back as 0; ``status`` is only a placeholder:
    judge the state with ``lifecycle.status_at``)."""
    scale = entry.get("k", 6)
    return EntitlementView(
        id=uuid.UUID(hex=entry["i"]),
        number=0,
        priority=0,
        status=Status.ACTIVE,
        billing_type=BillingType.PAY_PER_USE if entry["b"] == "U" else BillingType.PRE_PAID,
        quantity=_quantity(entry["q"], scale),
        starts_at=from_epoch_micros(entry["s"]),
        ends_at=_moment(entry["e"]),
        grace_until=_moment(entry["g"]),
        periods=tuple(
            Period(
                from_epoch_micros(start),
                _moment(end),
                _quantity(limit, scale),
                _rolled_over(entry, field, scale),
            )
            for start, end, limit, field in entry["p"]
        ),
        renewal=_decoded_renewal(entry.get("r"), entry.get("o"), scale),
        suspensions=tuple(
            (from_epoch_micros(start), _moment(end)) for start, end in entry.get("x", ())
        ),
        terminated_at=_moment(entry.get("z", -1)),
        scale=scale,
        filters=entry.get("f"),
        alert_rules=(
            tuple((str(i), str(kind), int(units)) for i, kind, units in entry["a"])
            if "a" in entry
            else None
        ),
        allotted=from_units(entry["c"], scale) if "c" in entry else None,
    )


def decode_resolution(raw: str) -> list[EntitlementView]:
    return [decode_view(entry) for entry in json.loads(raw)]
