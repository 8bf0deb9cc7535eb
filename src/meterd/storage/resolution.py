"""Resolution data: what the ingest script needs to route usage to entitlements.

The JSON written to ``P:res:{tag}:<feature>`` is a list of the customer's
entitlements for that feature, already in burn-down order (lowest priority,
then soonest end, then oldest), each as::

    {"i": id hex, "s": starts (epoch us), "u": usable until (epoch us, -1 = open),
     "e": ends_at (epoch us, -1 = open; before "u" when a grace period follows),
     "t": "A" usable or "S" suspended, "b": "P" pre-paid or "U" pay-per-use,
     "q": quantity (micro-units, -1 = unlimited),
     "p": [[start, end (-1 = open), limit (-1 = unlimited), field], ...]}

Terminated entitlements are left out: usage for them is ``no_entitlement``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from meterd.domain import BillingType, EntitlementView, Status
from meterd.quantity import to_micros
from meterd.redis_keys import period_field
from meterd.timeutil import epoch_micros

_FAR_FUTURE = 2**62


def burn_down_order(view: EntitlementView) -> tuple[int, int, int]:
    ends = epoch_micros(view.ends_at) if view.ends_at else _FAR_FUTURE
    return (view.priority, ends, view.number)


def _micros_or_open(moment: datetime | None) -> int:
    return epoch_micros(moment) if moment is not None else -1


def encode_resolution(views: Iterable[EntitlementView]) -> str:
    entries = []
    for view in sorted(views, key=burn_down_order):
        if view.status is Status.TERMINATED:
            continue
        quantity = to_micros(view.quantity) if view.quantity is not None else -1
        entries.append(
            {
                "i": view.id.hex,
                "s": epoch_micros(view.starts_at),
                "u": _micros_or_open(view.usable_until),
                "e": _micros_or_open(view.ends_at),
                "t": "S" if view.status is Status.SUSPENDED else "A",
                "b": "U" if view.billing_type is BillingType.PAY_PER_USE else "P",
                "q": quantity,
                "p": [
                    [
                        epoch_micros(p.start),
                        _micros_or_open(p.end),
                        to_micros(p.quantity) if p.quantity is not None else -1,
                        period_field(view.id, p.start),
                    ]
                    for p in sorted(view.periods, key=lambda p: p.start)
                ],
            }
        )
    return json.dumps(entries, separators=(",", ":"))
