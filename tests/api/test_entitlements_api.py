"""Native entitlement routes: filters, cursor pages, CRUD and status actions, per org."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.core.timeutil import isoformat, utcnow
from meterd.runtime import Runtime

from ..helpers import grant


def create(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"customer_id": "cust-1", "feature": "api_calls", "quantity": "10", **fields}
    response = client.post("/v1/entitlements", json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def listing(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get("/v1/entitlements", params=params, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def numbers(page: dict[str, Any]) -> list[int]:
    return [row["number"] for row in page["results"]]


def midnight_in(days: int) -> datetime:
    """Midnight (UTC) ``days`` days from today: an end that stays ahead of the clock."""
    return utcnow().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=days)


def day(moment: datetime) -> str:
    """A midnight as a request writes it."""
    return f"{moment:%Y-%m-%d}T00:00:00Z"


def shown(moment: datetime) -> str:
    """A midnight as a response writes it."""
    return f"{moment:%Y-%m-%d}T00:00:00.000000Z"


@pytest.fixture
def ten(client: TestClient, acme: dict[str, str]) -> list[dict[str, Any]]:
    """Ten entitlements of acme: customers c0..c4 twice, quantities 1..10."""
    return [
        create(client, acme, customer_id=f"c{i % 5}", quantity=str(i + 1), contract_id=f"k-{i}")
        for i in range(10)
    ]


def test_create_then_read_an_entitlement(client: TestClient, acme: dict[str, str]) -> None:
    ends = midnight_in(3 * 365)
    made = create(client, acme, quantity="12.5", grace_days=3, ends_at=day(ends))
    got = client.get(f"/v1/entitlements/{made['id']}", headers=acme).json()
    assert got == made
    assert (got["quantity"], got["consumed"], got["remaining"], got["status"]) == (
        "12.5",
        "0",
        "12.5",
        "ACTIVE",
    )
    assert got["grace_until"] == shown(ends + timedelta(days=3))


def test_a_naive_datetime_is_400(client: TestClient, acme: dict[str, str]) -> None:
    body = {"customer_id": "c", "feature": "api_calls", "ends_at": "2030-01-01T00:00:00"}
    response = client.post("/v1/entitlements", json=body, headers=acme)
    assert response.status_code == 400 and "timezone" in response.json()["detail"]


def test_an_unknown_feature_is_404(client: TestClient, acme: dict[str, str]) -> None:
    body = {"customer_id": "c", "feature": "nope"}
    assert client.post("/v1/entitlements", json=body, headers=acme).status_code == 404


def test_another_orgs_entitlement_is_not_found(
    client: TestClient, acme: dict[str, str], globex: dict[str, str]
) -> None:
    made = create(client, acme)
    for path in ("", "/periods", "/transitions"):
        assert client.get(f"/v1/entitlements/{made['id']}{path}", headers=globex).status_code == 404
    for action in ("suspend", "resume", "terminate"):
        response = client.post(f"/v1/entitlements/{made['id']}/{action}", headers=globex)
        assert response.status_code == 404
    assert listing(client, globex)["total_count"] == 0


def test_list_pages_forward_and_back_with_cursors(
    client: TestClient, acme: dict[str, str], ten: list[dict[str, Any]]
) -> None:
    first = listing(client, acme, limit=4)
    assert numbers(first) == [1, 2, 3, 4] and first["total_count"] == 10
    assert first["previous"] is None
    second = listing(client, acme, limit=4, cursor=first["next"])
    assert numbers(second) == [5, 6, 7, 8]
    third = listing(client, acme, limit=4, cursor=second["next"])
    assert numbers(third) == [9, 10] and third["next"] is None
    back = listing(client, acme, limit=4, cursor=third["previous"])
    assert numbers(back) == [5, 6, 7, 8]
    start = listing(client, acme, limit=4, cursor=back["previous"])
    assert numbers(start) == [1, 2, 3, 4] and start["previous"] is None


def test_pages_stay_right_while_rows_are_added(
    client: TestClient, acme: dict[str, str], ten: list[dict[str, Any]]
) -> None:
    first = listing(client, acme, limit=5, sort_type="desc")
    assert numbers(first) == [10, 9, 8, 7, 6]
    create(client, acme)  # number 11: before the cursor, not after it
    second = listing(client, acme, limit=5, sort_type="desc", cursor=first["next"])
    assert numbers(second) == [5, 4, 3, 2, 1]


def test_sorting_by_another_key(
    client: TestClient, acme: dict[str, str], ten: list[dict[str, Any]]
) -> None:
    page = listing(client, acme, sort_key="customer_id", limit=3)
    assert [r["customer_id"] for r in page["results"]] == ["c0", "c0", "c1"]
    following = listing(client, acme, sort_key="customer_id", limit=3, cursor=page["next"])
    assert [r["customer_id"] for r in following["results"]] == ["c1", "c2", "c2"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"customer": "c1"}, [2, 7]),
        ({"customer__in": "c1,c2"}, [2, 3, 7, 8]),
        ({"customer__neq": "c0"}, [2, 3, 4, 5, 7, 8, 9, 10]),
        ({"quantity__gt": "8"}, [9, 10]),
        ({"quantity__gte": "8"}, [8, 9, 10]),
        ({"quantity__lt": "3"}, [1, 2]),
        ({"quantity__lte": "2.000000"}, [1, 2]),
        ({"quantity": "5"}, [5]),
        ({"contract_id__in": "k-0,k-9"}, [1, 10]),
        ({"plan_id__isnull": "true"}, list(range(1, 11))),
        ({"plan_id__isnull": "false"}, []),
        ({"status": "ACTIVE", "customer": "c4"}, [5, 10]),
        ({"feature": "api_calls", "number__gte": "9"}, [9, 10]),
        ({"search": "k-1"}, [2]),
    ],
)
def test_filter_operators(
    client: TestClient,
    acme: dict[str, str],
    ten: list[dict[str, Any]],
    params: dict[str, str],
    expected: list[int],
) -> None:
    assert numbers(listing(client, acme, limit=50, **params)) == expected


def test_created_at_and_id_filters(
    client: TestClient, acme: dict[str, str], ten: list[dict[str, Any]]
) -> None:
    later = isoformat(utcnow() + timedelta(minutes=1))
    assert listing(client, acme, created_at__gt=later)["total_count"] == 0
    assert listing(client, acme, created_at__lte=later)["total_count"] == 10
    wanted = [ten[2]["id"], ten[5]["id"]]
    assert numbers(listing(client, acme, id__in=",".join(wanted))) == [3, 6]


def test_quantity_used_filters_flushed_consumption(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    from meterd.testing import event

    create(client, acme, customer_id="heavy")
    create(client, acme, customer_id="light")
    now = utcnow()
    runtime.ingest.ingest([event("heavy", "7", event_id="h", time=now)], now=now)
    runtime.flush.flush_all(now)
    assert [r["customer_id"] for r in listing(client, acme, quantity_used__gte="5")["results"]] == [
        "heavy"
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"colour": "red"}, "unknown query parameter"),
        ({"quantity__like": "1"}, "unknown operator"),
        ({"quantity__gt": "lots"}, "not a valid decimal"),
        ({"id": "not-a-uuid"}, "not a valid uuid"),
        ({"customer__gt": "a"}, "not ordered"),
        ({"plan_id__isnull": "maybe"}, "true or false"),
        ({"created_at__gte": "yesterday"}, "not a valid datetime"),
        ({"sort_key": "password"}, "sort_key must be one of"),
        ({"sort_type": "sideways"}, "sort_type"),
        ({"cursor": "!!!"}, "cursor is not valid"),
        ({"limit": "0"}, "limit"),
    ],
)
def test_bad_list_parameters_are_400_with_a_clear_message(
    client: TestClient, acme: dict[str, str], params: dict[str, str], message: str
) -> None:
    response = client.get("/v1/entitlements", params=params, headers=acme)
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_a_cursor_of_another_sort_is_400(
    client: TestClient, acme: dict[str, str], ten: list[dict[str, Any]]
) -> None:
    page = listing(client, acme, limit=2)
    response = client.get(
        "/v1/entitlements", params={"cursor": page["next"], "sort_type": "desc"}, headers=acme
    )
    assert response.status_code == 400


def test_suspend_and_resume_with_row_version(client: TestClient, acme: dict[str, str]) -> None:
    made = create(client, acme)
    path = f"/v1/entitlements/{made['id']}"
    suspended = client.post(path + "/suspend", json={"row_version": 1, "reason": "r"}, headers=acme)
    assert suspended.json()["status"] == "SUSPENDED"
    stale = client.post(path + "/resume", json={"row_version": 1}, headers=acme)
    assert stale.status_code == 409
    resumed = client.post(path + "/resume", json={"row_version": 2}, headers=acme)
    assert resumed.json()["status"] == "ACTIVE"
    steps = client.get(path + "/transitions", headers=acme).json()
    assert [(t["from_status"], t["to_status"]) for t in steps] == [
        ("ACTIVE", "SUSPENDED"),
        ("SUSPENDED", "ACTIVE"),
    ]
    assert steps[0]["job_run_id"].startswith("api-key:")


def test_terminating_twice_is_409(client: TestClient, acme: dict[str, str]) -> None:
    made = create(client, acme)
    path = f"/v1/entitlements/{made['id']}/terminate"
    assert client.post(path, headers=acme).status_code == 200
    assert client.post(path, headers=acme).status_code == 409


def test_periods_list_the_history(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ent = grant(runtime, quantity="10")
    body = client.get(f"/v1/entitlements/{ent.id}/periods", headers=acme).json()
    assert body == [
        {
            "period_start": isoformat(ent.starts_at),
            "period_end": isoformat(ent.ends_at),
            "quantity": "10",
            "consumed": "0",
            "rolled_over": None,
        }
    ]


def test_managing_needs_the_manage_permission(client: TestClient, runtime: Runtime) -> None:
    from meterd.services.api_keys import Permission

    from .conftest import key_for

    viewer = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    body = {"customer_id": "c", "feature": "api_calls"}
    assert client.post("/v1/entitlements", json=body, headers=viewer).status_code == 403


def test_changing_the_quantity_applies_to_the_current_period_at_once(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    from meterd.testing import event

    made = create(client, acme, quantity="5")
    now = utcnow()
    runtime.ingest.ingest([event(quantity="5", event_id="a", time=now)], now=now)
    path = f"/v1/entitlements/{made['id']}"
    changed = client.patch(path, json={"row_version": 1, "quantity": "8"}, headers=acme).json()
    assert (changed["quantity"], changed["remaining"], changed["row_version"]) == ("8", "3", 2)
    reserve = client.post(
        "/v1/customers/cust-1/features/api_calls/reserve",
        json={"quantity": "3", "idempotency_key": "k"},
        headers=acme,
    )
    assert reserve.json()["granted"] is True  # the Lua limits see the new quantity
    periods = client.get(path + "/periods", headers=acme).json()
    assert periods[0]["quantity"] == "8"


def test_a_change_on_a_stale_row_version_is_409(client: TestClient, acme: dict[str, str]) -> None:
    made = create(client, acme)
    path = f"/v1/entitlements/{made['id']}"
    assert (
        client.patch(path, json={"row_version": 1, "priority": 3}, headers=acme).status_code == 200
    )
    stale = client.patch(path, json={"row_version": 1, "quantity": "1"}, headers=acme)
    assert stale.status_code == 409 and "row_version 2" in stale.json()["detail"]


def test_converting_a_trial_and_clearing_the_quantity(
    client: TestClient, acme: dict[str, str]
) -> None:
    made = create(client, acme, contract_mode="TRIAL", ends_at=day(midnight_in(3 * 365)))
    path = f"/v1/entitlements/{made['id']}"
    later = midnight_in(4 * 365)
    body = {"row_version": 1, "contract_mode": "PRODUCTION", "quantity": None,
            "ends_at": day(later)}  # fmt: skip
    changed = client.patch(path, json=body, headers=acme).json()
    assert (changed["contract_mode"], changed["quantity"], changed["ends_at"]) == (
        "PRODUCTION",
        None,
        shown(later),
    )


def test_an_empty_change_is_400_and_another_orgs_is_404(
    client: TestClient, acme: dict[str, str], globex: dict[str, str]
) -> None:
    made = create(client, acme)
    path = f"/v1/entitlements/{made['id']}"
    assert client.patch(path, json={"row_version": 1}, headers=acme).status_code == 400
    assert (
        client.patch(path, json={"row_version": 1, "priority": 1}, headers=globex).status_code
        == 404
    )


def test_a_malformed_uuid_in_the_path_is_400(client: TestClient, acme: dict[str, str]) -> None:
    response = client.get("/v1/entitlements/not-a-uuid", headers=acme)
    assert response.status_code == 400
    assert "entitlement_id" in response.json()["detail"]
