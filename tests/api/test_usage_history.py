"""Issue 12, part 3 over HTTP: ``GET /v1/usage`` (usage per local window) and
``GET /v1/events`` (the events behind it, by cursor pages)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.core.domain import Outcome
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.testing import event

from ..conftest import NOW
from ..helpers import grant
from .conftest import Published, key_for

OCT_1 = datetime(2026, 10, 1, tzinfo=UTC)
DAY_20 = {"from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z"}
EVENTS = {"customer_id": "cust-1", **DAY_20}


def use(rt: Runtime, *events: tuple[str, str], now: datetime = NOW, **options: Any) -> None:
    """Count events ``(time, quantity)`` and flush them to the log."""
    batch = [
        event(quantity=quantity, event_id=f"e{n}", time=datetime.fromisoformat(time), **options)
        for n, (time, quantity) in enumerate(events)
    ]
    assert rt.ingest.ingest(batch, now=now).outcomes == [Outcome.ACCEPTED] * len(batch)
    rt.flush.flush_all(now)


@pytest.fixture
def unlimited(runtime: Runtime) -> Any:
    return grant(runtime, quantity=None, starts_at=OCT_1, ends_at=None)


def get_usage(client: TestClient, headers: dict[str, str], **params: str) -> Any:
    response = client.get("/v1/usage", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_usage_answers_day_windows_with_exact_decimal_strings(
    client: TestClient, runtime: Runtime, acme: dict[str, str], unlimited: Any
) -> None:
    use(
        runtime,
        ("2026-11-20T10:00:00+00:00", "0.000001"),
        ("2026-11-20T11:00:00+00:00", "0.000002"),
        ("2026-11-21T10:00:00+00:00", "12.5"),
    )
    assert get_usage(client, acme, **DAY_20) == {
        "window": "DAY",
        "tz": "UTC",
        "from": "2026-11-20T00:00:00+00:00",
        "to": "2026-11-22T00:00:00+00:00",
        "data": [
            {
                "window_start": "2026-11-20T00:00:00+00:00",
                "window_end": "2026-11-21T00:00:00+00:00",
                "quantity": "0.000003",
                "events": 2,
            },
            {
                "window_start": "2026-11-21T00:00:00+00:00",
                "window_end": "2026-11-22T00:00:00+00:00",
                "quantity": "12.5",
                "events": 1,
            },
        ],
    }


def test_usage_windows_are_those_of_the_tz_parameter(
    client: TestClient, runtime: Runtime, acme: dict[str, str], unlimited: Any
) -> None:
    use(
        runtime,
        ("2026-10-24T22:30:00+00:00", "1"),  # 00:30 CEST on the 25th in Paris
        ("2026-10-25T22:30:00+00:00", "2"),  # 23:30 CET on the 25th
    )
    body = get_usage(
        client, acme, **{"from": "2026-10-24T00:00:00Z", "to": "2026-10-27T00:00:00Z"},
        tz="Europe/Paris",
    )  # fmt: skip
    assert (body["tz"], body["from"], body["to"]) == (
        "Europe/Paris",
        "2026-10-24T02:00:00+02:00",
        "2026-10-27T01:00:00+01:00",
    )
    assert [(w["window_start"], w["window_end"], w["quantity"]) for w in body["data"]] == [
        ("2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00", "3")
    ]


def test_usage_month_windows_are_the_months_of_the_tz(
    client: TestClient, runtime: Runtime, acme: dict[str, str], unlimited: Any
) -> None:
    use(runtime, ("2026-10-31T23:30:00+00:00", "1"), ("2026-11-20T10:00:00+00:00", "2"))
    span = {"from": "2026-10-01T00:00:00+05:30", "to": "2026-12-01T00:00:00+05:30"}
    months = get_usage(client, acme, **span, window="MONTH", tz="Asia/Kolkata")["data"]
    # 23:30 UTC on October 31 is 05:00 on November 1 in India; October has no usage
    assert [(w["window_start"], w["window_end"], w["quantity"]) for w in months] == [
        ("2026-11-01T00:00:00+05:30", "2026-12-01T00:00:00+05:30", "3")
    ]


def test_usage_hour_windows_are_the_hours_with_usage(
    client: TestClient, runtime: Runtime, acme: dict[str, str], unlimited: Any
) -> None:
    use(runtime, ("2026-11-20T10:00:00+00:00", "1"), ("2026-11-20T10:59:59+00:00", "2"))
    hours = get_usage(client, acme, **DAY_20, window="HOUR")["data"]
    assert [(w["window_start"], w["window_end"], w["quantity"]) for w in hours] == [
        ("2026-11-20T10:00:00+00:00", "2026-11-20T11:00:00+00:00", "3")
    ]


@pytest.mark.parametrize(
    ("group_by", "keys"),
    [
        ("customer", [("cust-1", None), ("cust-2", None)]),
        ("feature", [(None, "api_calls")]),
        ("customer,feature", [("cust-1", "api_calls"), ("cust-2", "api_calls")]),
    ],
)
def test_usage_group_by_customer_and_feature(
    client: TestClient,
    runtime: Runtime,
    acme: dict[str, str],
    unlimited: Any,
    group_by: str,
    keys: list[Any],
) -> None:
    grant(runtime, "cust-2", quantity=None, starts_at=OCT_1, ends_at=None)
    use(runtime, ("2026-11-20T10:00:00+00:00", "1"))
    use(runtime, ("2026-11-20T10:00:00+00:00", "2"), customer="cust-2", source="other")
    rows = get_usage(client, acme, **DAY_20, group_by=group_by)["data"]
    assert [(w.get("customer_id"), w.get("feature")) for w in rows] == keys
    assert all("entitlement_id" not in w for w in rows)


def test_usage_group_by_entitlement_carries_its_customer_and_feature(
    client: TestClient, runtime: Runtime, acme: dict[str, str], unlimited: Any
) -> None:
    first = grant(runtime, quantity="3", starts_at=OCT_1, ends_at=None, priority=-1)
    use(runtime, ("2026-11-20T10:00:00+00:00", "5"))
    rows = get_usage(client, acme, **DAY_20, group_by="entitlement")["data"]
    assert sorted(
        (w["entitlement_id"], w["customer_id"], w["feature"], w["quantity"]) for w in rows
    ) == sorted(
        [
            (str(first.id), "cust-1", "api_calls", "3"),
            (str(unlimited.id), "cust-1", "api_calls", "2"),
        ]
    )


def test_usage_group_by_entitlement_shows_each_grants_filters(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    o3 = grant(runtime, quantity=None, starts_at=OCT_1, ends_at=None, filters={"model": "o3"})
    plain = grant(runtime, quantity=None, starts_at=OCT_1, ends_at=None, priority=5)
    counted = event(quantity="4", event_id="m1", time=datetime(2026, 11, 20, 10, tzinfo=UTC))
    counted["data"]["model"] = "o3"
    other = event(quantity="1", event_id="m2", time=datetime(2026, 11, 20, 11, tzinfo=UTC))
    assert runtime.ingest.ingest([counted, other], now=NOW).outcomes == [Outcome.ACCEPTED] * 2
    runtime.flush.flush_all(NOW)
    rows = get_usage(client, acme, **DAY_20, group_by="entitlement")["data"]
    shown = {w["entitlement_id"]: (w["quantity"], w.get("filters")) for w in rows}
    assert shown == {str(o3.id): ("4", {"model": "o3"}), str(plain.id): ("1", None)}


def test_the_sum_of_usage_over_the_range_is_the_consumed_total_of_the_value_read(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    now = utcnow()
    grant(
        runtime, quantity="10", starts_at=now - timedelta(days=2), ends_at=now + timedelta(days=30)
    )
    grant(
        runtime, quantity=None, starts_at=now - timedelta(days=2), ends_at=now + timedelta(days=30)
    )
    quantities = ["0.000001", "4.5", "3.25", "7", "0.123456"]
    times = [(now - timedelta(minutes=37 * n)).isoformat() for n in range(len(quantities))]
    use(runtime, *zip(times, quantities, strict=True), now=now)
    span = {
        "from": (now - timedelta(days=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    rows = get_usage(client, acme, **span, window="HOUR", tz="Asia/Kathmandu")["data"]
    total = sum((Decimal(w["quantity"]) for w in rows), Decimal(0))
    value = client.get("/v1/customers/cust-1/features/api_calls", headers=acme).json()
    assert total == Decimal(value["consumed"]) == Decimal("14.873457")
    assert sum(w["events"] for w in rows) == 6  # one event was split over the two


@pytest.mark.parametrize(
    ("start", "end", "tz"),
    [
        ("0001-01-02T00:00:00Z", "0001-03-01T00:00:00Z", "America/Adak"),
        ("9999-10-01T00:00:00Z", "9999-12-30T00:00:00Z", "Pacific/Kiritimati"),
    ],
)
def test_usage_at_the_ends_of_the_calendar_answers(
    client: TestClient, acme: dict[str, str], start: str, end: str, tz: str
) -> None:
    body = get_usage(client, acme, **{"from": start, "to": end}, window="MONTH", tz=tz)
    assert body["data"] == []


# -- events ----------------------------------------------------------------------------------


def test_events_pages_round_trip_the_cursor_without_gaps_or_duplicates(
    client: TestClient, runtime: Runtime, acme: dict[str, str], unlimited: Any
) -> None:
    use(runtime, *[(f"2026-11-20T10:{n:02d}:00+00:00", "1") for n in range(7)])
    seen: list[str] = []
    params: dict[str, Any] = {**EVENTS, "limit": 3}
    pages = 0
    while True:
        response = client.get("/v1/events", params=params, headers=acme)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen.extend(e["id"] for e in body["data"])
        if body["next"] is None:
            break
        params["cursor"] = body["next"]
    assert (seen, pages) == ([f"e{n}" for n in range(7)], 3)


def test_events_show_each_part_of_a_split_event(
    client: TestClient, runtime: Runtime, acme: dict[str, str], unlimited: Any
) -> None:
    first = grant(runtime, quantity="3", starts_at=OCT_1, ends_at=None, priority=-1)
    use(runtime, ("2026-11-20T10:00:00.123456+00:00", "5"))
    body = client.get("/v1/events", params=EVENTS, headers=acme).json()
    assert body["next"] is None
    assert [
        (e["part"], e["entitlement_id"], e["quantity"], e["event_quantity"]) for e in body["data"]
    ] == [(0, str(first.id), "3", "5"), (1, str(unlimited.id), "2", "5")]
    part = body["data"][0]
    assert (part["source"], part["id"], part["time"]) == (
        "tests",
        "e0",
        "2026-11-20T10:00:00.123456Z",
    )
    assert part["customer_id"] == "cust-1" and part["feature"] == "api_calls"
    assert part["period_start"] == "2026-10-01T00:00:00.000000Z"
    assert isinstance(part["data"], dict) and body["data"][1]["data"] is None


def test_post_events_still_queues_events_beside_get_events(
    client: TestClient, acme: dict[str, str], published: Published
) -> None:
    posted = client.post("/v1/events", json=[event(time=utcnow())], headers=acme)
    assert posted.status_code == 202 and posted.json()["queued"] == 1
    assert len(published.events) == 1
    listed = client.get("/v1/events", params=EVENTS, headers=acme)
    assert listed.json() == {"data": [], "next": None}


# -- tenancy and permissions -----------------------------------------------------------------


def test_another_orgs_key_sees_no_usage_and_no_events(
    client: TestClient,
    runtime: Runtime,
    acme: dict[str, str],
    globex: dict[str, str],
    unlimited: Any,
) -> None:
    use(runtime, ("2026-11-20T10:00:00+00:00", "1"))
    assert len(get_usage(client, acme, **DAY_20)["data"]) == 1
    assert get_usage(client, globex, **DAY_20, customer_id="cust-1")["data"] == []
    response = client.get("/v1/events", params=EVENTS, headers=globex)
    assert response.json() == {"data": [], "next": None}


def test_a_key_without_the_view_permission_is_403(client: TestClient, runtime: Runtime) -> None:
    writer = key_for(runtime, "acme", Permission.EVENTS_WRITE)
    for path, params in (("/v1/usage", DAY_20), ("/v1/events", EVENTS)):
        response = client.get(path, params=params, headers=writer)
        assert response.status_code == 403, path


# -- bad inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({**DAY_20, "tz": "Mars/Olympus_Mons"}, "unknown time zone"),
        ({**DAY_20, "tz": "../../etc/passwd"}, "unknown time zone"),
        ({**DAY_20, "to": DAY_20["from"]}, "from must be before to"),
        ({"from": DAY_20["to"], "to": DAY_20["from"]}, "from must be before to"),
        ({**DAY_20, "from": "2026-11-20T00:00:00"}, "from: '2026-11-20T00:00:00' is not an RFC"),
        ({**DAY_20, "to": "2026-11-22"}, "to: '2026-11-22' is not an RFC 3339"),
        ({**DAY_20, "to": "2026-13-22T00:00:00Z"}, "to: '2026-13-22T00:00:00Z' is not a valid"),
        ({**DAY_20, "from": "0001-01-01T00:00:00+01:00"}, "from is out of range"),
        ({**DAY_20, "to": "9999-12-31T23:59:59-01:00"}, "to is out of range"),
        ({**DAY_20, "from": "0000-01-01T00:00:00Z"}, "is not a valid date-time"),
        ({"to": DAY_20["to"]}, "from"),
        ({**DAY_20, "window": "WEEK"}, "window"),
        ({**DAY_20, "group_by": "customer,plan"}, "group_by: 'plan' is not one of"),
        (
            {"from": "2026-01-01T00:00:00Z", "to": "2027-03-01T00:00:00Z", "window": "HOUR"},
            "more than 10000 HOUR windows",
        ),
    ],
)
def test_bad_usage_inputs_are_400(
    client: TestClient, acme: dict[str, str], params: dict[str, str], detail: str
) -> None:
    response = client.get("/v1/usage", params=params, headers=acme)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({**EVENTS, "cursor": "garbled"}, "the cursor is not valid"),
        ({**EVENTS, "limit": "0"}, "limit"),
        ({**EVENTS, "limit": "1001"}, "limit"),
        ({**EVENTS, "to": EVENTS["from"]}, "from must be before to"),
        (DAY_20, "customer_id"),
        ({**EVENTS, "customer_id": "a\x01b"}, "customer_id"),
    ],
)
def test_bad_events_inputs_are_400(
    client: TestClient, acme: dict[str, str], params: dict[str, str], detail: str
) -> None:
    response = client.get("/v1/events", params=params, headers=acme)
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]
