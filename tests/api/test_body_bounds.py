"""Issue 11: quantities and date-times in request bodies that no backend stores, or
that would push a derived date (grace, the next month, a plan's term) past year
9999, answer 400 with the bound in the message, never a 500."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from meterd.core.quantity import MAX_MICROS, MAX_UNITS, format_quantity, from_micros
from meterd.runtime import Runtime

from ..helpers import detail_of, grant

#: The largest quantity a counter of a scale-6 feature (api_calls) holds exactly
#: (2^53 - 1 micro-units), and one more.
LARGEST = format_quantity(from_micros(MAX_MICROS))
BEYOND = format_quantity(from_micros(MAX_MICROS + 1))
#: What no feature counts, whatever its scale (the grammar's bound: scale 0).
TOO_LARGE = f"is too large to count exactly (at most {MAX_UNITS} at scale 0)"
#: What api_calls (scale 6) does not count: its feature's bound.
BEYOND_SCALE = (
    f"{BEYOND} is more than a counter of this feature holds exactly (scale 6: at most {LARGEST})"
)
RANGE = "from 0001-01-01T00:00:00Z up to (not including) 9000-01-01T00:00:00Z"


def create(client: TestClient, acme: dict[str, str], **body: Any) -> Any:
    return client.post(
        "/v1/entitlements", json={"customer_id": "c", "feature": "api_calls", **body}, headers=acme
    )


def test_a_granted_quantity_above_the_largest_counted_quantity_is_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    detail = detail_of(create(client, acme, quantity="99999999999999999999"))
    assert detail.startswith("quantity: Value error, quantity") and TOO_LARGE in detail


def test_the_largest_counted_quantity_can_be_granted_and_read_back(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = create(client, acme, quantity=LARGEST, renewal_quantity="1")
    assert response.status_code == 201, response.text
    assert response.json()["quantity"] == LARGEST


def test_a_renewal_quantity_above_the_largest_counted_quantity_is_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    detail = detail_of(create(client, acme, quantity="1", renewal_quantity=BEYOND))
    assert detail == f"renewal_quantity {BEYOND_SCALE}"


def test_a_changed_quantity_above_the_largest_counted_quantity_is_400(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ent = grant(runtime)
    response = client.patch(
        f"/v1/entitlements/{ent.id}", json={"row_version": 1, "quantity": BEYOND}, headers=acme
    )
    assert detail_of(response) == f"quantity {BEYOND_SCALE}"


def test_a_plan_quantity_above_the_largest_counted_quantity_is_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    body = {"key": "big", "feature": "api_calls", "quantity": BEYOND}
    detail = detail_of(client.post("/v1/plans", json=body, headers=acme))
    assert detail == f"quantity {BEYOND_SCALE}"


def test_an_end_after_year_9999_in_utc_is_400(client: TestClient, acme: dict[str, str]) -> None:
    detail = detail_of(create(client, acme, ends_at="9999-12-31T23:59:59-01:00"))
    assert detail == f"ends_at is out of range: in UTC it must be {RANGE}"


def test_a_start_before_year_1_in_utc_is_400(client: TestClient, acme: dict[str, str]) -> None:
    detail = detail_of(create(client, acme, starts_at="0001-01-01T00:00:00+01:00"))
    assert detail == f"starts_at is out of range: in UTC it must be {RANGE}"


def test_an_end_in_year_9000_is_400_as_grace_would_pass_year_9999(
    client: TestClient, acme: dict[str, str]
) -> None:
    detail = detail_of(create(client, acme, ends_at="9000-01-01T00:00:00Z", grace_days=3650))
    assert detail.startswith("ends_at is out of range")


def test_the_longest_grace_after_the_last_end_is_granted(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = create(client, acme, ends_at="8999-12-31T23:59:59.999999Z", grace_days=3650)
    assert response.status_code == 201, response.text
    assert response.json()["grace_until"] == "9009-12-29T23:59:59.999999Z"


def test_a_monthly_grant_starting_in_the_last_month_is_granted(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = create(client, acme, billing_type="PAY_PER_USE", starts_at="8999-12-31T23:00:00Z")
    assert response.status_code == 201, response.text


def test_a_changed_end_in_year_9000_is_400(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ent = grant(runtime)
    response = client.patch(
        f"/v1/entitlements/{ent.id}",
        json={"row_version": 1, "ends_at": "9999-12-31T23:59:59-01:00"},
        headers=acme,
    )
    assert detail_of(response).startswith("ends_at is out of range")


def test_a_plan_term_over_900_years_is_400(client: TestClient, acme: dict[str, str]) -> None:
    body = {"key": "ages", "feature": "api_calls", "term_value": 901, "term_unit": "YEAR"}
    detail = detail_of(client.post("/v1/plans", json=body, headers=acme))
    assert detail == "term_value: a term is at most 900 years"


def test_the_longest_plan_term_with_the_longest_grace_still_makes_an_entitlement(
    client: TestClient, acme: dict[str, str]
) -> None:
    for key, value, unit in (("years", 900, "YEAR"), ("months", 10_000, "MONTH")):
        plan = {"key": key, "feature": "api_calls", "quantity": "1", "term_value": value,
                "term_unit": unit, "grace_days": 3650, "auto_renew": True}  # fmt: skip
        created = client.post("/v1/plans", json=plan, headers=acme)
        assert created.status_code == 201, created.text
        response = client.post(
            "/v1/entitlements",
            json={
                "customer_id": "c",
                "plan_id": created.json()["id"],
                "starts_at": "8999-12-31T23:59:59.999999Z",
            },
            headers=acme,
        )
        assert response.status_code == 201, response.text
