"""GET /entitlements/customer/unique/{customer_id}: Zenskar's page, field by field."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from meterd.core.domain import FeatureType
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.testing import event

from ..conftest import NOW
from ..helpers import grant

PATH = "/entitlements/customer/unique/cust-1"


def zenskar(acme: dict[str, str]) -> dict[str, str]:
    return {**acme, "organisation": "acme"}


def get(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get(PATH, params=params, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def setup(rt: Runtime) -> None:
    """cust-1 holds api_calls twice (10 + 5, one expired) and seats once (3)."""
    rt.catalog.create_feature(
        "acme", "seats", now=NOW, name="Seats", type=FeatureType.USERS, units="users"
    )
    now = utcnow()
    grant(rt, quantity="10", starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=9))
    grant(rt, quantity="5", starts_at=now - timedelta(days=40), ends_at=now - timedelta(days=10))
    rt.lifecycle.advance(now)  # the second one expires
    grant(rt, quantity="3", feature="seats", starts_at=now - timedelta(days=1), ends_at=None)
    rt.ingest.ingest(
        [
            event(quantity="0.1", event_id="a", time=now),
            event(quantity="0.2", event_id="b", time=now),
            event(quantity="2", event_id="c", time=now, feature="seats"),
        ],
        now=now,
    )


def test_the_response_has_the_seed_shape_field_by_field(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    setup(runtime)
    body = get(client, zenskar(acme))
    assert set(body) == {"results", "next", "previous", "total_count"}
    assert body["total_count"] == 2 and body["next"] is None and body["previous"] is None
    api_calls, seats = body["results"]  # sorted by name: api_calls, Seats
    feature = runtime.features.by_key("acme", "api_calls")
    assert api_calls == {
        "entitlement": {
            "id": str(feature.id),
            "name": "api_calls",
            "description": "",
            "entitlement_type": "Feature",
            "units": "calls",
            "is_active": True,
            "product_id": None,
            "created_at": "2026-11-22T10:00:00Z",
        },
        "total_quantity": 15,
        "total_quantity_used": 0.3,
        "total_expired_entitlements": 1,
        "filters": [],
    }
    assert (seats["entitlement"]["entitlement_type"], seats["total_quantity_used"]) == ("Users", 2)


def test_sums_are_exact_numbers_in_the_json_text(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    setup(runtime)
    text = client.get(PATH, headers=zenskar(acme)).text
    assert '"total_quantity_used":0.3' in text  # not 0.30000000000000004


def test_filters_apply_to_the_grants_before_summing(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    setup(runtime)
    body = get(client, zenskar(acme), quantity__gte="5", search="api")
    (only,) = body["results"]
    assert (only["total_quantity"], only["total_expired_entitlements"]) == (15, 1)
    body = get(client, zenskar(acme), quantity_used__gt="1")
    assert [r["entitlement"]["name"] for r in body["results"]] == ["Seats"]
    seats = runtime.features.by_key("acme", "seats")
    body = get(client, zenskar(acme), entitlement__in=str(seats.id))
    assert [r["entitlement"]["name"] for r in body["results"]] == ["Seats"]
    assert get(client, zenskar(acme), contract_id__isnull="false")["results"] == []


def test_sorting_and_cursor_pages(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    setup(runtime)
    params = {"sort_key": "total_quantity", "sort_type": "desc", "limit": 1}
    first = get(client, zenskar(acme), **params)
    assert [r["total_quantity"] for r in first["results"]] == [15]
    second = get(client, zenskar(acme), cursor=first["next"], **params)
    assert [r["total_quantity"] for r in second["results"]] == [3]
    assert second["next"] is None
    back = get(client, zenskar(acme), cursor=second["previous"], **params)
    assert back["results"] == first["results"]


def test_the_organisation_header_must_name_the_keys_org(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    response = client.get(PATH, headers={**acme, "organisation": "globex"})
    assert response.status_code == 403


def test_the_organisation_header_is_required(client: TestClient, acme: dict[str, str]) -> None:
    assert client.get(PATH, headers=acme).status_code == 400


def test_another_orgs_customer_is_invisible(
    client: TestClient, runtime: Runtime, globex: dict[str, str]
) -> None:
    setup(runtime)
    body = get(client, {**globex, "organisation": "globex"})
    assert (body["results"], body["total_count"]) == ([], 0)


def test_bad_parameters_are_400(client: TestClient, acme: dict[str, str]) -> None:
    for params in ({"sort_key": "secret"}, {"quantity__gt": "x"}, {"cursor": "zz"}, {"x": "1"}):
        assert client.get(PATH, params=params, headers=zenskar(acme)).status_code == 400
