"""Rollover through the API (issue 23 item 1, CONTRACT 6b): a renewed term's
quantity is its renewal quantity plus MIN(rollover_max, MAX(remaining of the term
before, rollover_min)), as a function of the events: a late event into an old
term changes what every later term carried. The API's figures (periods, the value
read, reserve) are compared with a reference model written from the contract's
sentence, over 24 monthly renewals anchored on the 31st (the month-end trap).

Dated from the real clock: the API reads it. The late window is set long enough
that every term of the run still takes events (carries stay open; when they
become final is ``tests/test_rollover_finalise.py``'s)."""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterd.api.app import create_app
from meterd.config import Settings
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.testing import event

from ..helpers import detail_of
from .conftest import NoBroker, Published, key_for

TERMS = 24  # the current term is the 24th: 23 renewals behind it
LATE_WINDOW = timedelta(days=800)


def month_end_anchor(now: datetime) -> datetime:
    """The 31st of a month TERMS - 1 to TERMS + 1 months before ``now``, so the term
    containing now is term TERMS - 1 or close to it; midnight UTC."""
    year, month = now.year, now.month - (TERMS - 1)
    while True:
        while month < 1:
            month, year = month + 12, year - 1
        if calendar.monthrange(year, month)[1] == 31:
            return datetime(year, month, 31, tzinfo=UTC)
        month -= 1


def term_starts(anchor: datetime, until: datetime) -> list[datetime]:
    """The starts of the monthly terms from ``anchor`` to the one containing ``until``,
    clamped to the month's end (31st, then 28th/29th/30th, then back to 31st)."""
    starts = []
    k = 0
    while True:
        year, month = anchor.year + (anchor.month - 1 + k) // 12, (anchor.month - 1 + k) % 12 + 1
        day = min(anchor.day, calendar.monthrange(year, month)[1])
        start = datetime(year, month, day, tzinfo=UTC)
        if start > until:
            return starts
        starts.append(start)
        k += 1


@dataclass(frozen=True)
class Grant:
    quantity: int
    renewal: int
    rollover_max: int
    rollover_min: int


def reference_limits(grant: Grant, consumed: list[int]) -> list[int]:
    """The contract's sentence: term 0 has the grant's quantity; term k the renewal
    quantity plus MIN(rollover_max, MAX(limit[k-1] - consumed[k-1], rollover_min))."""
    limits = [grant.quantity]
    for k in range(1, len(consumed)):
        remaining = limits[k - 1] - consumed[k - 1]
        limits.append(grant.renewal + min(grant.rollover_max, max(remaining, grant.rollover_min)))
    return limits


@pytest.fixture
def late_runtime(runtime: Runtime) -> Runtime:
    """The runtime with a late window that reaches back past the whole run."""
    longer: Settings = runtime.settings.model_copy(
        update={"late_window": int(LATE_WINDOW.total_seconds())}
    )
    return Runtime(settings=longer, redis=runtime.redis, database=runtime.database)


@pytest.fixture
def api(late_runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(lambda: late_runtime, publish_events=Published().append, celery_app=NoBroker)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def key(late_runtime: Runtime) -> dict[str, str]:
    return key_for(late_runtime, "acme")


def create(api: TestClient, key: dict[str, str], customer: str, grant: Grant, **more: Any) -> str:
    anchor = month_end_anchor(utcnow())
    body = {
        "customer_id": customer,
        "feature": "api_calls",
        "quantity": str(grant.quantity),
        "renewal_quantity": str(grant.renewal),
        "starts_at": anchor.isoformat(),
        "term_value": 1,
        "term_unit": "MONTH",
        "auto_renew": True,
        "rollover_max": str(grant.rollover_max),
        "rollover_min": str(grant.rollover_min),
        **more,
    }
    response = api.post("/v1/entitlements", json=body, headers=key)
    assert response.status_code == 201, response.text
    found: str = response.json()["id"]
    return found


def ingest(rt: Runtime, customer: str, usage: list[tuple[datetime, int]]) -> None:
    events = [
        event(customer, str(units), event_id=uuid.uuid4().hex, time=at) for at, units in usage
    ]
    report = rt.ingest.ingest(events, now=utcnow())
    assert all(o.value == "accepted" for o in report.outcomes), (usage, report.reasons)


def periods(api: TestClient, key: dict[str, str], ent: str) -> list[dict[str, Any]]:
    response = api.get(f"/v1/entitlements/{ent}/periods", headers=key)
    assert response.status_code == 200, response.text
    body = response.json()
    rows: list[dict[str, Any]] = body["results"] if isinstance(body, dict) else body
    return sorted(rows, key=lambda p: p["period_start"])


def value(api: TestClient, key: dict[str, str], customer: str) -> dict[str, Any]:
    response = api.get(f"/v1/customers/{customer}/features/api_calls", headers=key)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def check_against_model(
    api: TestClient,
    key: dict[str, str],
    customer: str,
    ent: str,
    grant: Grant,
    usage: list[tuple[datetime, int]],
) -> None:
    now = utcnow()
    starts = term_starts(month_end_anchor(now), now)
    consumed = [0] * len(starts)
    for at, units in usage:
        k = max(i for i, s in enumerate(starts) if s <= at)
        consumed[k] += units
    limits = reference_limits(grant, consumed)
    shown = {datetime.fromisoformat(p["period_start"]): p for p in periods(api, key, ent)}
    for k, start in enumerate(starts):
        row = shown.get(start)
        if row is None:  # a term no event reached and no job opened: nothing to show
            assert consumed[k] == 0
            continue
        assert Decimal(row["consumed"]) == consumed[k], (k, row)
        assert Decimal(row["quantity"]) == limits[k], (k, row, limits)
        if k > 0 and grant.rollover_max == 0:  # MIN(0, ...): nothing rolls over
            assert row["rolled_over"] is None, (k, row)
        elif k > 0:
            assert Decimal(row["rolled_over"]) == limits[k] - grant.renewal, (k, row)
    current = value(api, key, customer)
    assert Decimal(current["quantity"]) == limits[-1], (current, limits)
    assert Decimal(current["remaining"]) == max(limits[-1] - consumed[-1], 0), current


def test_a_renewed_term_carries_what_the_term_before_left(
    api: TestClient, key: dict[str, str], late_runtime: Runtime
) -> None:
    grant = Grant(quantity=100, renewal=100, rollover_max=50, rollover_min=0)
    create(api, key, "c-carry", grant)
    starts = term_starts(month_end_anchor(utcnow()), utcnow())
    # every term before carried 50 (nothing used): the term before had 150, uses 130
    ingest(late_runtime, "c-carry", [(starts[-2] + timedelta(hours=1), 130)])
    # it left 20: the current term has 100 + 20
    assert Decimal(value(api, key, "c-carry")["quantity"]) == 120


def test_a_late_event_into_an_old_term_changes_every_carry_after_it(
    api: TestClient, key: dict[str, str], late_runtime: Runtime
) -> None:
    grant = Grant(quantity=100, renewal=100, rollover_max=1000, rollover_min=0)
    ent = create(api, key, "c-late", grant)
    starts = term_starts(month_end_anchor(utcnow()), utcnow())
    usage = [(s + timedelta(hours=2), 10) for s in starts]  # 90 left each term: they pile up
    ingest(late_runtime, "c-late", usage)
    check_against_model(api, key, "c-late", ent, grant, usage)
    late = (starts[2] + timedelta(days=3), 95)  # term 2 now leaves less: every later one
    ingest(late_runtime, "c-late", [late])
    check_against_model(api, key, "c-late", ent, grant, [*usage, late])


def test_reserve_grants_up_to_the_carried_limit_and_no_further(
    api: TestClient, key: dict[str, str], late_runtime: Runtime
) -> None:
    grant = Grant(quantity=10, renewal=10, rollover_max=5, rollover_min=0)
    create(api, key, "c-reserve", grant)
    starts = term_starts(month_end_anchor(utcnow()), utcnow())
    # the term before had 10 + 5 carried, and left 3
    ingest(late_runtime, "c-reserve", [(starts[-2] + timedelta(hours=1), 12)])
    path = "/v1/customers/c-reserve/features/api_calls/reserve"
    granted = api.post(path, json={"quantity": "13", "idempotency_key": "r1"}, headers=key)
    assert granted.status_code == 200 and granted.json()["granted"] is True, granted.text
    denied = api.post(path, json={"quantity": "1", "idempotency_key": "r2"}, headers=key)
    assert denied.json()["granted"] is False, denied.text


def test_rollover_min_carries_even_after_an_overage(
    api: TestClient, key: dict[str, str], late_runtime: Runtime
) -> None:
    grant = Grant(quantity=10, renewal=10, rollover_max=8, rollover_min=4)
    create(api, key, "c-min", grant)
    starts = term_starts(month_end_anchor(utcnow()), utcnow())
    ingest(late_runtime, "c-min", [(starts[-2] + timedelta(hours=1), 25)])  # 18 + 7
    assert Decimal(value(api, key, "c-min")["quantity"]) == 14


def test_the_figures_hold_after_a_flush(
    api: TestClient, key: dict[str, str], late_runtime: Runtime
) -> None:
    grant = Grant(quantity=40, renewal=30, rollover_max=25, rollover_min=2)
    ent = create(api, key, "c-flush", grant)
    starts = term_starts(month_end_anchor(utcnow()), utcnow())
    usage = [(s + timedelta(days=1), 5 * (k % 9) + 1) for k, s in enumerate(starts)]
    ingest(late_runtime, "c-flush", usage)
    late_runtime.flush.flush_all(utcnow())
    check_against_model(api, key, "c-flush", ent, grant, usage)
    late = (starts[5] + timedelta(days=2), 33)
    ingest(late_runtime, "c-flush", [late])
    check_against_model(api, key, "c-flush", ent, grant, [*usage, late])
    late_runtime.flush.flush_all(utcnow())
    check_against_model(api, key, "c-flush", ent, grant, [*usage, late])


usage_plans = st.lists(
    st.tuples(
        st.integers(0, TERMS),  # the term (modulo the terms before the current one)
        st.integers(0, 27 * 24 - 1),  # hours into it
        st.integers(1, 60),  # units
    ),
    max_size=30,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    grant=st.builds(
        Grant,
        quantity=st.integers(0, 100),
        renewal=st.integers(0, 100),
        rollover_max=st.integers(0, 120),
        rollover_min=st.integers(0, 40),
    ).filter(lambda g: g.rollover_min <= g.rollover_max),
    plan=usage_plans,
    batches=st.integers(1, 5),
)
def test_every_figure_follows_the_reference_model_whatever_the_order(
    api: TestClient,
    key: dict[str, str],
    late_runtime: Runtime,
    grant: Grant,
    plan: list[tuple[int, int, int]],
    batches: int,
) -> None:
    customer = f"c-{uuid.uuid4().hex[:10]}"
    ent = create(api, key, customer, grant)
    starts = term_starts(month_end_anchor(utcnow()), utcnow())
    # terms counted from the oldest; the events arrive in the order drawn (late
    # ones into old terms after newer ones), in ``batches`` calls
    past = len(starts) - 1  # the current term may not have begun 27 days ago
    usage = [(starts[k % past] + timedelta(hours=h), units) for k, h, units in plan]
    size = max(1, -(-len(usage) // batches))
    for i in range(0, len(usage), size):
        ingest(late_runtime, customer, usage[i : i + size])
    check_against_model(api, key, customer, ent, grant, usage)


def test_rollover_without_a_renewal_is_400(api: TestClient, key: dict[str, str]) -> None:
    body = {"customer_id": "c", "feature": "api_calls", "quantity": "5", "rollover_max": "5"}
    response = api.post("/v1/entitlements", json=body, headers=key)
    assert response.status_code == 400
    assert "rollover needs a renewing grant" in detail_of(response)


def test_rollover_min_over_rollover_max_is_400(api: TestClient, key: dict[str, str]) -> None:
    body = {
        "customer_id": "c", "feature": "api_calls", "quantity": "5", "auto_renew": True,
        "term_value": 1, "term_unit": "MONTH", "rollover_max": "5", "rollover_min": "6",
    }  # fmt: skip
    response = api.post("/v1/entitlements", json=body, headers=key)
    assert response.status_code == 400
    assert "rollover_min must not be more than rollover_max" in detail_of(response)


def test_rollover_min_alone_is_400(api: TestClient, key: dict[str, str]) -> None:
    body = {
        "customer_id": "c", "feature": "api_calls", "quantity": "5", "auto_renew": True,
        "term_value": 1, "term_unit": "MONTH", "rollover_min": "1",
    }  # fmt: skip
    response = api.post("/v1/entitlements", json=body, headers=key)
    assert response.status_code == 400
    assert "rollover_min needs rollover_max" in detail_of(response)


@pytest.mark.parametrize("aggregation", ["MAX", "LATEST", "UNIQUE_COUNT"])
def test_rollover_of_a_feature_that_is_not_a_running_total_is_400(
    api: TestClient, key: dict[str, str], aggregation: str
) -> None:
    feature = {"key": f"f-{aggregation.lower()}", "aggregation": aggregation}
    if aggregation == "UNIQUE_COUNT":
        feature["value_property"] = "user"
    made = api.post("/v1/features", json=feature, headers=key)
    assert made.status_code == 201, made.text
    body = {
        "customer_id": "c", "feature": feature["key"], "quantity": "5", "auto_renew": True,
        "term_value": 1, "term_unit": "MONTH", "rollover_max": "5",
    }  # fmt: skip
    response = api.post("/v1/entitlements", json=body, headers=key)
    assert response.status_code == 400
    assert f"aggregates by {aggregation}" in detail_of(response)


def test_rollover_with_more_digits_than_the_feature_counts_is_400(
    api: TestClient, key: dict[str, str]
) -> None:
    made = api.post("/v1/features", json={"key": "whole", "scale": 0}, headers=key)
    assert made.status_code == 201, made.text
    body = {
        "customer_id": "c", "feature": "whole", "quantity": "5", "auto_renew": True,
        "term_value": 1, "term_unit": "MONTH", "rollover_max": "0.5",
    }  # fmt: skip
    response = api.post("/v1/entitlements", json=body, headers=key)
    assert response.status_code == 400
    assert "rollover_max" in detail_of(response)


def test_rollover_is_fixed_at_creation(api: TestClient, key: dict[str, str]) -> None:
    ent = create(api, key, "c-fixed", Grant(10, 10, 5, 0))
    row_version = api.get(f"/v1/entitlements/{ent}", headers=key).json()["row_version"]
    body = {"row_version": row_version, "rollover_max": "6"}
    response = api.patch(f"/v1/entitlements/{ent}", json=body, headers=key)
    assert response.status_code == 400
    assert "rollover_max is fixed at creation" in detail_of(response)


def test_an_entitlement_shows_its_rollover(api: TestClient, key: dict[str, str]) -> None:
    ent = create(api, key, "c-show", Grant(10, 10, 5, 1))
    shown = api.get(f"/v1/entitlements/{ent}", headers=key).json()
    assert (shown["rollover_max"], shown["rollover_min"]) == ("5", "1")


def test_an_entitlement_from_a_plan_rolls_over_as_the_plan_says(
    api: TestClient, key: dict[str, str], late_runtime: Runtime
) -> None:
    plan = {
        "key": "carry", "feature": "api_calls", "quantity": "20", "term_value": 1,
        "term_unit": "MONTH", "auto_renew": True, "renewal_quantity": "20",
        "rollover_max": "15", "rollover_min": "0",
    }  # fmt: skip
    made = api.post("/v1/plans", json=plan, headers=key)
    assert made.status_code == 201, made.text
    assert (made.json()["rollover_max"], made.json()["rollover_min"]) == ("15", "0")
    start = month_end_anchor(utcnow())
    body = {"customer_id": "c-plan", "plan_id": made.json()["id"], "starts_at": start.isoformat()}
    ent = api.post("/v1/entitlements", json=body, headers=key)
    assert ent.status_code == 201, ent.text
    assert ent.json()["rollover_max"] == "15"
    starts = term_starts(start, utcnow())
    # the term before had 20 + 15 carried, and left 5
    ingest(late_runtime, "c-plan", [(starts[-2] + timedelta(hours=1), 30)])
    assert Decimal(value(api, key, "c-plan")["quantity"]) == 25


def test_a_plan_that_rolls_over_without_renewing_is_400(
    api: TestClient, key: dict[str, str]
) -> None:
    plan = {"key": "nope", "feature": "api_calls", "quantity": "20", "rollover_max": "5"}
    response = api.post("/v1/plans", json=plan, headers=key)
    assert response.status_code == 400
    assert "rollover needs a renewing grant" in detail_of(response)
