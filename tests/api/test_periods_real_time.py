"""Issue 20 (7.2): ``GET /v1/entitlements/{id}/periods`` counts usage not yet
flushed, like every other read: it showed 7.8 while the value read said 1007.8,
for up to a flush interval, or the whole outage while the flush was stalled.
Before and after the flush it shows the same figures as the value read."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.core.timeutil import isoformat, month_start, next_month_start, utcnow
from meterd.runtime import Runtime
from meterd.testing import event

VALUE = "/v1/customers/cust-1/features/api_calls"


def create(client: TestClient, acme: dict[str, str], **fields: Any) -> str:
    body = {"customer_id": "cust-1", "feature": "api_calls", "quantity": "5000", **fields}
    response = client.post("/v1/entitlements", json=body, headers=acme)
    assert response.status_code == 201, response.text
    ent_id: str = response.json()["id"]
    return ent_id


def count(runtime: Runtime, quantity: str, event_id: str, at: datetime | None = None) -> None:
    now = utcnow()
    runtime.ingest.ingest([event(quantity=quantity, event_id=event_id, time=at or now)], now=now)


def periods(client: TestClient, acme: dict[str, str], ent_id: str) -> list[tuple[str, str]]:
    response = client.get(f"/v1/entitlements/{ent_id}/periods", headers=acme)
    assert response.status_code == 200, response.text
    return [(p["period_start"], p["consumed"]) for p in response.json()]


def value_read(client: TestClient, acme: dict[str, str]) -> tuple[str, str]:
    """(period_start, consumed) of the customer's one entitlement, as the value read says."""
    (ent,) = client.get(VALUE, headers=acme).json()["entitlements"]
    return ent["period_start"], ent["consumed"]


@pytest.fixture
def grant(client: TestClient, acme: dict[str, str]) -> str:
    return create(client, acme, ends_at=isoformat(utcnow() + timedelta(days=30)))


def test_unflushed_usage_shows_in_periods_as_in_the_value_read(
    client: TestClient, runtime: Runtime, acme: dict[str, str], grant: str
) -> None:
    count(runtime, "7.8", "a")
    runtime.flush.flush_all(utcnow())
    count(runtime, "1000", "b")
    assert value_read(client, acme)[1] == "1007.8"
    assert periods(client, acme, grant) == [value_read(client, acme)]
    entitlement = client.get(f"/v1/entitlements/{grant}", headers=acme).json()
    assert entitlement["consumed"] == "1007.8"
    runtime.flush.flush_all(utcnow())
    assert periods(client, acme, grant) == [(value_read(client, acme)[0], "1007.8")]


def test_usage_in_a_stalled_flush_shows_in_periods(
    client: TestClient, runtime: Runtime, acme: dict[str, str], grant: str
) -> None:
    count(runtime, "7.8", "a")
    runtime.flush.flush_all(utcnow())
    count(runtime, "1000", "b")
    # A flush took the pending usage and stopped before the database had it.
    assert runtime.counters.begin_flush("stalled-batch") == "stalled-batch"
    count(runtime, "0.2", "c")
    assert periods(client, acme, grant) == [value_read(client, acme)]
    assert value_read(client, acme)[1] == "1008"
    runtime.flush.flush_all(utcnow())
    assert periods(client, acme, grant) == [(value_read(client, acme)[0], "1008")]


def test_a_month_the_flush_has_not_opened_yet_shows_its_usage(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    now = utcnow()
    this_month = month_start(now)
    first_month = month_start(this_month - timedelta(days=40))
    ent_id = create(
        client, acme, billing_type="PAY_PER_USE", quantity=None, starts_at=isoformat(first_month)
    )
    last_month = month_start(this_month - timedelta(seconds=1))
    count(runtime, "3", "late", at=this_month - timedelta(hours=1))  # late, last month's
    count(runtime, "2.5", "now")
    expected = [
        (isoformat(first_month), "0"),
        (isoformat(last_month), "3"),
        (isoformat(this_month), "2.5"),
    ]
    assert periods(client, acme, ent_id) == expected
    assert value_read(client, acme) == expected[-1]
    runtime.flush.flush_all(utcnow())
    assert periods(client, acme, ent_id) == expected
    response = client.get(f"/v1/entitlements/{ent_id}/periods", headers=acme).json()
    assert [p["period_end"] for p in response] == [
        isoformat(next_month_start(start)) for start in (first_month, last_month, this_month)
    ]


def test_a_renewed_term_the_lifecycle_job_has_not_recorded_shows_as_the_value_read(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    starts_at = (utcnow() - timedelta(days=1, hours=1)).replace(microsecond=0)
    ent_id = create(
        client,
        acme,
        quantity="10",
        renewal_quantity="20",
        starts_at=isoformat(starts_at),
        auto_renew=True,
        term_value=1,
        term_unit="DAY",
    )
    count(runtime, "4", "a")
    shown = periods(client, acme, ent_id)
    assert shown == [(isoformat(starts_at), "0"), value_read(client, acme)]
    assert shown[-1] == (isoformat(starts_at + timedelta(days=1)), "4")
    listed = client.get(f"/v1/entitlements/{ent_id}/periods", headers=acme).json()
    assert (listed[-1]["quantity"], listed[-1]["period_end"]) == (
        "20",
        isoformat(starts_at + timedelta(days=2)),
    )
    runtime.flush.flush_all(utcnow())
    assert periods(client, acme, ent_id) == shown
