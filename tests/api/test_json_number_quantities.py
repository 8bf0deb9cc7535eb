"""Issue 20 (7.5): reserve, entitlement and plan bodies take a quantity as a JSON
number, as docs/api.md says, read exactly from the digits sent (never through a
float) and judged like the same digits in a string: positive for reserve, at most
the feature's scale of fractional digits, within the bounds; an exponent is
refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from meterd.api.app import create_app
from meterd.api.exact_json import ExactJSONRoute
from meterd.core.timeutil import isoformat, utcnow
from meterd.runtime import Runtime

RESERVE = "/v1/customers/cust-1/features/api_calls/reserve"


def raw_post(client: TestClient, path: str, body: str, headers: dict[str, str]) -> Any:
    """POST a body written by hand, so each number is sent exactly as written."""
    return client.post(path, content=body, headers={**headers, "content-type": "application/json"})


def entitlement_body(quantity: str, **extra: str) -> str:
    fields = [
        '"customer_id": "cust-1"',
        '"feature": "api_calls"',
        f'"quantity": {quantity}',
        f'"ends_at": "{isoformat(utcnow() + timedelta(days=30))}"',
        *(f'"{name}": {value}' for name, value in extra.items()),
    ]
    return "{" + ", ".join(fields) + "}"


@pytest.fixture
def granted(client: TestClient, acme: dict[str, str]) -> str:
    """An entitlement of 100 api_calls for cust-1, open now: its id."""
    response = raw_post(client, "/v1/entitlements", entitlement_body('"100"'), acme)
    assert response.status_code == 201, response.text
    ent_id: str = response.json()["id"]
    return ent_id


def consumed(client: TestClient, acme: dict[str, str]) -> str:
    value = client.get("/v1/customers/cust-1/features/api_calls", headers=acme).json()
    text: str = value["consumed"]
    return text


def reserve(client: TestClient, acme: dict[str, str], quantity: str, key: str = "k") -> Any:
    body = f'{{"quantity": {quantity}, "idempotency_key": "{key}"}}'
    return raw_post(client, RESERVE, body, acme)


# -- reserve ---------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "text"), [("5", "5"), ("5.5", "5.5"), ("0.000001", "0.000001")])
def test_reserve_takes_a_json_number(
    client: TestClient, acme: dict[str, str], granted: str, number: str, text: str
) -> None:
    response = reserve(client, acme, number)
    assert response.status_code == 200, response.text
    assert (response.json()["granted"], response.json()["quantity"]) == (True, text)
    assert consumed(client, acme) == text


def test_reserving_the_number_0_1_ten_times_consumes_exactly_1(
    client: TestClient, acme: dict[str, str], granted: str
) -> None:
    for i in range(10):
        assert reserve(client, acme, "0.1", key=f"k{i}").json()["granted"] is True
    assert consumed(client, acme) == "1"


def test_a_retry_with_the_number_is_the_same_reservation_as_with_the_string(
    client: TestClient, acme: dict[str, str], granted: str
) -> None:
    assert reserve(client, acme, '"2.5"').json()["outcome"] == "granted"
    assert reserve(client, acme, "2.50").json()["outcome"] == "already_granted"
    assert consumed(client, acme) == "2.5"


@pytest.mark.parametrize(
    ("number", "says"),
    [
        ("1e3", "no sign or exponent"),
        ("1E+1", "no sign or exponent"),
        ("-5", "no sign or exponent"),
        ("0", "positive"),
        ("0.1234567", "at most 6 after the point"),
        ("9007199254740992", "too large"),
    ],
)
def test_reserve_refuses_a_number_it_would_refuse_as_text(
    client: TestClient, acme: dict[str, str], granted: str, number: str, says: str
) -> None:
    response = reserve(client, acme, number)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("quantity: ") and says in response.json()["detail"]
    assert consumed(client, acme) == "0"


def test_reserve_refuses_more_digits_than_the_features_scale(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    runtime.catalog.create_feature("acme", "seats", now=utcnow(), scale=0)
    body = '{"customer_id": "cust-1", "feature": "seats", "quantity": 10}'
    assert raw_post(client, "/v1/entitlements", body, acme).status_code == 201
    path = "/v1/customers/cust-1/features/seats/reserve"
    response = raw_post(client, path, '{"quantity": 1.5, "idempotency_key": "k"}', acme)
    assert response.status_code == 400 and "scale 0" in response.json()["detail"]
    ok = raw_post(client, path, '{"quantity": 2, "idempotency_key": "k"}', acme)
    assert ok.json()["granted"] is True


# -- entitlements and plans ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "text"),
    [
        ("5", "5"),
        ("5.5", "5.5"),
        ("0.1", "0.1"),
        ("0", "0"),
        ("10.000000", "10"),
        # Past what a float keeps: a float would have made it ...740992.
        ("9007199254.740991", "9007199254.740991"),
    ],
)
def test_an_entitlement_takes_a_json_number_quantity_exactly(
    client: TestClient, acme: dict[str, str], number: str, text: str
) -> None:
    response = raw_post(client, "/v1/entitlements", entitlement_body(number), acme)
    assert response.status_code == 201, response.text
    assert response.json()["quantity"] == text


def test_renewal_quantity_and_allotment_take_json_numbers(
    client: TestClient, acme: dict[str, str]
) -> None:
    body = entitlement_body("5", renewal_quantity="7.25", allotment="3")
    made = raw_post(client, "/v1/entitlements", body, acme)
    assert made.status_code == 201, made.text
    assert (made.json()["renewal_quantity"], made.json()["allotment"]) == ("7.25", "3")
    path = f"/v1/entitlements/{made.json()['id']}"
    patch = '{"row_version": 1, "quantity": 8.5, "allotment": 0.5}'
    headers = {**acme, "content-type": "application/json"}
    changed = client.patch(path, content=patch, headers=headers)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["quantity"], changed.json()["allotment"]) == ("8.5", "0.5")


@pytest.mark.parametrize(
    ("number", "says"),
    [
        ("1e3", "no sign or exponent"),
        ("-1", "no sign or exponent"),
        ("0.1234567", "at most 6 after the point"),
        ("9007199254740992", "too large"),
    ],
)
def test_an_entitlement_refuses_a_number_it_would_refuse_as_text(
    client: TestClient, acme: dict[str, str], number: str, says: str
) -> None:
    response = raw_post(client, "/v1/entitlements", entitlement_body(number), acme)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("quantity: ") and says in response.json()["detail"]
    assert client.get("/v1/entitlements", headers=acme).json()["total_count"] == 0


def test_an_entitlement_refuses_more_digits_than_the_features_scale(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    runtime.catalog.create_feature("acme", "seats", now=utcnow(), scale=0)
    body = '{"customer_id": "cust-1", "feature": "seats", "quantity": 5.5}'
    response = raw_post(client, "/v1/entitlements", body, acme)
    assert response.status_code == 400 and "scale 0" in response.json()["detail"]


@pytest.mark.parametrize(("number", "text"), [("5", "5"), ("5.5", "5.5"), ("0.1", "0.1")])
def test_a_plan_takes_a_json_number_quantity_exactly(
    client: TestClient, acme: dict[str, str], number: str, text: str
) -> None:
    body = (
        f'{{"key": "p", "feature": "api_calls", "quantity": {number},'
        f' "renewal_quantity": {number}}}'
    )
    response = raw_post(client, "/v1/plans", body, acme)
    assert response.status_code == 201, response.text
    assert (response.json()["quantity"], response.json()["renewal_quantity"]) == (text, text)


def test_a_plan_refuses_an_exponent(client: TestClient, acme: dict[str, str]) -> None:
    body = '{"key": "p", "feature": "api_calls", "quantity": 1e3}'
    response = raw_post(client, "/v1/plans", body, acme)
    assert response.status_code == 400 and "exponent" in response.json()["detail"]


# -- the decoder --------------------------------------------------------------------------


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """The app's routes, those of included routers too (FastAPI keeps them apart)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found.extend(api_routes(route.original_router.routes))
    return found


def test_every_route_reads_its_body_with_the_exact_decoder() -> None:
    app = create_app(lambda: None, check_redis=False)  # type: ignore[arg-type, return-value]
    routes = api_routes(app.routes)
    assert len(routes) >= 20
    assert [r.path for r in routes if not isinstance(r, ExactJSONRoute)] == []


def test_a_body_with_nan_says_it_is_not_json(
    client: TestClient, acme: dict[str, str], granted: str
) -> None:
    response = reserve(client, acme, "NaN")
    assert response.status_code == 400
    assert response.json()["detail"] == "the body is not JSON: NaN is not a JSON value"
