"""The hold routes: reserve with ``hold_seconds``, ``GET /v1/holds/{id}``, settle and
release (CONTRACT 6a), and fifty callers racing for the last units."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from ..helpers import grant
from .conftest import key_for

VALUE = "/v1/customers/cust-1/features/api_calls"


def _grant(rt: Runtime, quantity: str = "10") -> None:
    now = utcnow()
    grant(
        rt,
        quantity=quantity,
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=30),
        now=now,
    )


def _hold(
    client: TestClient, headers: dict[str, str], quantity: str, key: str, seconds: int = 60
) -> Any:
    return client.post(
        VALUE + "/reserve",
        json={"quantity": quantity, "idempotency_key": key, "hold_seconds": seconds},
        headers=headers,
    ).json()


def test_reserve_with_hold_seconds_answers_the_hold_and_shows_it_held(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    _grant(runtime)
    body = _hold(client, acme, "4", "h1")
    assert (body["granted"], body["outcome"]) == (True, "granted")
    assert body["hold"]["status"] == "held" and body["hold"]["quantity"] == "4"
    assert (body["value"]["held"], body["value"]["remaining"], body["value"]["consumed"]) == (
        "4",
        "6",
        "0",
    )


def test_a_hold_is_shown_by_its_id(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    _grant(runtime)
    hold = _hold(client, acme, "4", "h1")["hold"]
    shown = client.get(f"/v1/holds/{hold['id']}", headers=acme).json()
    assert shown == hold


def test_settle_answers_the_settled_hold_and_the_same_again_on_a_retry(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    _grant(runtime)
    hold = _hold(client, acme, "4", "h1")["hold"]
    url = f"/v1/holds/{hold['id']}/settle"
    first = client.post(url, json={"quantity": "3"}, headers=acme).json()
    again = client.post(url, json={"quantity": "3"}, headers=acme).json()
    assert (first["settled_now"], again["settled_now"]) == (True, False)
    assert first["hold"]["settled_quantity"] == again["hold"]["settled_quantity"] == "3"
    value = client.get(VALUE, headers=acme).json()
    assert (value["consumed"], value["held"], value["remaining"]) == ("3", "0", "7")


def test_a_settle_with_another_quantity_is_a_409_naming_the_first(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    _grant(runtime)
    hold = _hold(client, acme, "4", "h1")["hold"]
    url = f"/v1/holds/{hold['id']}/settle"
    client.post(url, json={"quantity": "3"}, headers=acme)
    response = client.post(url, json={"quantity": "2"}, headers=acme)
    assert response.status_code == 409 and "settled with 3" in response.text


def test_settling_a_released_hold_is_a_409_naming_its_status(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    _grant(runtime)
    hold = _hold(client, acme, "4", "h1")["hold"]
    assert (
        client.post(f"/v1/holds/{hold['id']}/release", headers=acme).json()["status"] == "released"
    )
    response = client.post(f"/v1/holds/{hold['id']}/settle", json={"quantity": "1"}, headers=acme)
    assert response.status_code == 409 and "released" in response.text


def test_an_unknown_hold_is_a_404(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    response = client.get("/v1/holds/00000000-0000-0000-0000-000000000001", headers=acme)
    assert response.status_code == 404


def test_hold_seconds_outside_one_second_to_a_day_is_a_400(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    _grant(runtime)
    for seconds in (0, 86_401):
        response = client.post(
            VALUE + "/reserve",
            json={"quantity": "1", "idempotency_key": f"k{seconds}", "hold_seconds": seconds},
            headers=acme,
        )
        assert response.status_code == 400, response.text


def test_the_hold_routes_need_the_reserve_permission(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    _grant(runtime)
    hold = _hold(client, acme, "4", "h1")["hold"]
    reader = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    assert client.get(f"/v1/holds/{hold['id']}", headers=reader).status_code == 403
    response = client.post(f"/v1/holds/{hold['id']}/settle", json={"quantity": "1"}, headers=reader)
    assert response.status_code == 403


def test_fifty_callers_racing_holds_and_reserves_for_the_last_units_never_overspend(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    _grant(runtime, "100")
    first = _hold(client, acme, "93", "big")["hold"]  # 7 units left
    barrier = threading.Barrier(50)

    def call(i: int) -> tuple[str, Any]:
        barrier.wait()
        if i % 3 == 0:
            body = client.post(
                VALUE + "/reserve", json={"quantity": "1", "idempotency_key": f"r{i}"}, headers=acme
            ).json()
            return "reserve", body
        if i % 3 == 1:
            return "hold", _hold(client, acme, "1", f"h{i}")
        # settle the big hold with 93 (the same answer for every racer)
        url = f"/v1/holds/{first['id']}/settle"
        return "settle", client.post(url, json={"quantity": "93"}, headers=acme).json()

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(call, range(50)))
    granted = sum(1 for kind, body in results if kind != "settle" and body["granted"])
    settled_now = sum(1 for kind, body in results if kind == "settle" and body["settled_now"])
    assert granted == 7 and settled_now == 1
    value = client.get(VALUE, headers=acme).json()
    reserved = sum(1 for kind, body in results if kind == "reserve" and body["granted"])
    held = granted - reserved
    assert Decimal(value["consumed"]) == 93 + reserved
    assert Decimal(value["held"]) == held
    assert (value["remaining"], value["overage"]) == ("0", "0")
