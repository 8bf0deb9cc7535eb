"""A threshold notification of a rolled-over term shows the limit the crossing was
judged against (the script records it with the crossing: lua/ingest/thresholds.lua)
as ``quantity``, and what carried into it as ``rolled_over``; entitlements without
rollover keep their payload (tests/test_notifications.py)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import update

from meterd.core.notifications import Crossing
from meterd.runtime import Runtime
from meterd.storage.models import Entitlement
from meterd.testing import event

from .conftest import NOW
from .test_rollover_finalise import backdated, d


def usage(rt: Runtime, quantity: str, at: datetime) -> None:
    rt.ingest.ingest([event("cust-1", quantity, event_id=uuid.uuid4().hex, time=at)], now=NOW)


def threshold_data(rt: Runtime, entitlement_id: uuid.UUID) -> list[dict[str, Any]]:
    return [
        json.loads(n.payload)["data"]
        for n in rt.notification_store.all_for(entitlement_id)
        if n.type == "entitlement.threshold_crossed"
    ]


def rolled_over_grant(rt: Runtime) -> uuid.UUID:
    """``backdated``'s grant, the cache told of its rollover: the Nov 10 term (holding
    NOW) carries 50 from the unused Oct 10 term, so it holds 150."""
    ent = backdated(rt)
    rt.resolution.refresh([("acme", "cust-1", "api_calls")], NOW)
    return ent.id


def test_the_alert_shows_the_limit_with_the_carry(runtime: Runtime) -> None:
    """120 is 80 % of 150 (not 120 % of the renewal quantity 100): the 80 % rule
    fires, the 100 % rule does not, and the payload says 150 of which 50 carried."""
    ent_id = rolled_over_grant(runtime)
    usage(runtime, "120", NOW)
    runtime.flush.flush_all(NOW)
    (data,) = threshold_data(runtime, ent_id)
    assert data == {
        "rule": {"id": "default_80", "kind": "PERCENT", "threshold": "80"},
        "threshold_percent": 80,
        "period_start": "2026-11-10T00:00:00.000000Z",
        "quantity": "150",
        "consumed": "120",
        "rolled_over": "50",
    }


def test_the_alert_shows_the_carry_a_late_event_left(runtime: Runtime) -> None:
    """A late 120 into the Oct 10 term (150) leaves 30 to carry: the Nov 10 term holds
    130, and 104 is its 80 %. The payload shows the limit the script judged with,
    which the period row (100) does not hold."""
    ent_id = rolled_over_grant(runtime)
    usage(runtime, "120", d(2026, 11, 1))
    usage(runtime, "104", NOW)
    runtime.flush.flush_all(NOW)
    by_period = {data["period_start"]: data for data in threshold_data(runtime, ent_id)}
    nov = by_period["2026-11-10T00:00:00.000000Z"]
    assert (nov["rule"]["id"], nov["quantity"], nov["rolled_over"], nov["consumed"]) == (
        "default_80",
        "130",
        "30",
        "104",
    )


def test_a_grant_with_a_rollover_max_of_zero_keeps_the_payload_of_before(
    runtime: Runtime,
) -> None:
    ent = backdated(runtime)
    with runtime.database.sessions.begin() as s:
        s.execute(update(Entitlement).where(Entitlement.id == ent.id).values(rollover_max=0))
    runtime.resolution.refresh([("acme", "cust-1", "api_calls")], NOW)
    usage(runtime, "80", NOW)
    runtime.flush.flush_all(NOW)
    (data,) = threshold_data(runtime, ent.id)
    assert (data["quantity"], data["consumed"], "rolled_over" in data) == ("100", "80", False)


def test_a_crossing_recorded_without_a_limit_reads_as_before() -> None:
    """A pending crossing written by the script before it recorded the limit (a
    deploy while crossings wait for the flush) parses with no limit, and its
    notification falls back to the period's quantity."""
    field = f"n:{uuid.uuid4().hex}:1700000000000000:80"
    old = Crossing.parse(field, "1700000000000001:120")
    new = Crossing.parse(field, "1700000000000001:120:150")
    assert (old.consumed_units, old.limit_units) == (120, None)
    assert (new.consumed_units, new.limit_units) == (120, 150)
    assert old.notification_id == new.notification_id
