"""Features carry their meter (scale, aggregation, event type, value property, meter
filters): created and shown through the API, refused with the reason when it cannot
be counted, fixed once created; grants are checked against the feature's scale."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.core.quantity import max_quantity

from ..helpers import detail_of

FIXED = "create a new feature to change how it is metered"


def create_feature(client: TestClient, acme: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/features", json={"key": "tokens", **body}, headers=acme)


def created(client: TestClient, acme: dict[str, str], **body: Any) -> dict[str, Any]:
    response = create_feature(client, acme, **body)
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()
    return found


def grant(client: TestClient, acme: dict[str, str], **body: Any) -> Any:
    return client.post(
        "/v1/entitlements", json={"customer_id": "c", "feature": "tokens", **body}, headers=acme
    )


def test_a_feature_created_without_a_meter_sums_usage_events_at_scale_6(
    client: TestClient, acme: dict[str, str]
) -> None:
    body = created(client, acme)
    meter = {k: body[k] for k in ("scale", "aggregation", "event_type", "value_property")}
    assert meter == {"scale": 6, "aggregation": "SUM", "event_type": None, "value_property": None}
    assert body["meter_filters"] is None


@pytest.mark.parametrize(
    "meter",
    [
        {"aggregation": "SUM", "event_type": "llm.request", "value_property": "usage.input_tokens"},
        {"aggregation": "COUNT", "event_type": "api.request"},
        {"aggregation": "UNIQUE_COUNT", "value_property": "user_id"},
        {"aggregation": "UNIQUE_COUNT", "event_type": "login", "value_property": "user.id"},
        {"aggregation": "MAX", "event_type": "storage.sample", "value_property": "bytes"},
        {"aggregation": "LATEST", "event_type": "seats.changed", "value_property": "seats"},
    ],
    ids=["SUM", "COUNT", "UNIQUE_COUNT-usage", "UNIQUE_COUNT-raw", "MAX", "LATEST"],
)
def test_a_feature_of_each_aggregation_is_created_and_read_back(
    client: TestClient, acme: dict[str, str], meter: dict[str, Any]
) -> None:
    body = created(client, acme, scale=0, **meter)
    read = client.get("/v1/features/tokens", headers=acme).json()
    for found in (body, read):
        assert {k: found[k] for k in meter} == meter
        assert found["scale"] == 0


def test_a_value_property_is_stored_without_a_leading_dollar_dot(
    client: TestClient, acme: dict[str, str]
) -> None:
    body = created(client, acme, event_type="llm.request", value_property="$.usage.output_tokens")
    assert body["value_property"] == "usage.output_tokens"


def test_meter_filters_are_stored_and_shown(client: TestClient, acme: dict[str, str]) -> None:
    filters = {"model": "gpt-4o", "region.zone": 3, "cached": False}
    body = created(
        client, acme, event_type="llm.request", value_property="usage.tokens", meter_filters=filters
    )
    assert body["meter_filters"] == filters
    listed = {f["key"]: f for f in client.get("/v1/features", headers=acme).json()}
    assert listed["tokens"]["meter_filters"] == filters


@pytest.mark.parametrize(
    ("meter", "reason"),
    [
        ({"scale": 7}, "scale must be an integer from 0 to 6"),
        ({"scale": -1}, "scale must be an integer from 0 to 6"),
        (
            {"event_type": "llm.request"},
            "a SUM meter over 'llm.request' events needs value_property",
        ),
        (
            {"aggregation": "MAX", "event_type": "x"},
            "a MAX meter over 'x' events needs value_property",
        ),
        ({"value_property": "usage.tokens"}, "value_property needs event_type"),
        ({"aggregation": "UNIQUE_COUNT"}, "a UNIQUE_COUNT feature needs value_property"),
        ({"meter_filters": {"model": "gpt-4o"}}, "meter filters need event_type"),
        ({"event_type": "meterd.usage", "value_property": "q"}, "is the usage event itself"),
        ({"event_type": "bad type!", "value_property": "q"}, "event_type 'bad type!' must be"),
        ({"event_type": "e", "value_property": "usage..tokens"}, "is not a dotted path"),
        (
            {"event_type": "e", "value_property": "v", "meter_filters": {"model": "x" * 201}},
            "meter_filters['model'] must be text (at most 200",
        ),
    ],
)
def test_a_meter_that_cannot_be_counted_is_400_with_the_reason(
    client: TestClient, acme: dict[str, str], meter: dict[str, Any], reason: str
) -> None:
    assert reason in detail_of(create_feature(client, acme, **meter))
    assert client.get("/v1/features/tokens", headers=acme).status_code == 404


def test_an_unknown_aggregation_is_400_naming_the_known_ones(
    client: TestClient, acme: dict[str, str]
) -> None:
    detail = detail_of(create_feature(client, acme, aggregation="AVG"))
    assert detail.startswith("aggregation:") and "UNIQUE_COUNT" in detail


def test_a_meter_filter_of_a_fractional_number_is_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    body = {"event_type": "e", "value_property": "v", "meter_filters": {"temperature": 1.5}}
    assert detail_of(create_feature(client, acme, **body)).startswith("meter_filters.temperature")


def test_the_scale_cannot_change_after_creation(client: TestClient, acme: dict[str, str]) -> None:
    created(client, acme, scale=2)
    response = client.patch("/v1/features/tokens", json={"scale": 0}, headers=acme)
    detail = detail_of(response)
    assert detail.startswith("scale of feature 'tokens' cannot change") and FIXED in detail
    assert client.get("/v1/features/tokens", headers=acme).json()["scale"] == 2


@pytest.mark.parametrize(
    "change",
    [
        {"aggregation": "MAX"},
        {"event_type": "other.event"},
        {"value_property": "usage.output_tokens"},
        {"meter_filters": {"model": "gpt-4o"}},
        {"meter_filters": None},
        {"event_type": None},
    ],
)
def test_how_a_feature_is_metered_cannot_change_after_creation(
    client: TestClient, acme: dict[str, str], change: dict[str, Any]
) -> None:
    body = {
        "event_type": "llm.request",
        "value_property": "usage.input_tokens",
        "meter_filters": {"model": "gpt-4.1"},
    }
    before = created(client, acme, **body)
    response = client.patch("/v1/features/tokens", json={"name": "Tokens", **change}, headers=acme)
    assert FIXED in detail_of(response)
    assert client.get("/v1/features/tokens", headers=acme).json() == before


def test_a_patch_repeating_the_meter_still_renames_the_feature(
    client: TestClient, acme: dict[str, str]
) -> None:
    meter = {"scale": 3, "event_type": "llm.request", "value_property": "$.usage.input_tokens"}
    created(client, acme, **meter)
    response = client.patch(
        "/v1/features/tokens", json={"name": "Input tokens", **meter}, headers=acme
    )
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["scale"]) == ("Input tokens", 3)


def test_a_grant_with_more_fractional_digits_than_the_scale_is_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    created(client, acme, scale=0)
    detail = detail_of(grant(client, acme, quantity="1.5"))
    assert detail == (
        "quantity 1.5 has more fractional digits than its feature counts"
        " (scale 0: at most 0 after the point)"
    )


def test_a_whole_grant_on_a_scale_0_feature_is_201(
    client: TestClient, acme: dict[str, str]
) -> None:
    created(client, acme, scale=0)
    response = grant(client, acme, quantity="1.000")
    assert response.status_code == 201, response.text
    assert response.json()["quantity"] == "1"


def test_a_grant_of_10_to_the_15_on_a_scale_0_feature_is_201_on_every_backend(
    client: TestClient, acme: dict[str, str]
) -> None:
    created(client, acme, scale=0)
    response = grant(client, acme, quantity=str(10**15))
    assert response.status_code == 201, response.text
    assert response.json()["quantity"] == str(10**15)


def test_the_largest_grant_of_a_scale_0_feature_is_201_on_every_backend(
    client: TestClient, acme: dict[str, str]
) -> None:
    created(client, acme, scale=0)
    largest = str(max_quantity(0).normalize())
    response = grant(client, acme, quantity=largest)
    assert response.status_code == 201, response.text
    assert response.json()["quantity"] == largest == "9007199254740991"


def test_a_grant_past_the_bound_of_a_scale_0_feature_is_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    created(client, acme, scale=3)
    response = grant(client, acme, quantity="9007199254741")
    assert detail_of(response) == (
        "quantity 9007199254741 is more than a counter of this feature holds exactly"
        " (scale 3: at most 9007199254740.991)"
    )


@pytest.mark.parametrize("field", ["renewal_quantity", "allotment"])
def test_a_renewal_quantity_or_allotment_finer_than_the_scale_is_400(
    client: TestClient, acme: dict[str, str], field: str
) -> None:
    created(client, acme, scale=1)
    detail = detail_of(grant(client, acme, quantity="1", **{field: "0.25"}))
    assert detail.startswith(f"{field}: quantity 0.25 has more fractional digits")
    assert "(scale 1: at most 1 after the point)" in detail


def test_a_changed_quantity_finer_than_the_scale_is_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    created(client, acme, scale=0)
    ent = grant(client, acme, quantity="10").json()
    response = client.patch(
        f"/v1/entitlements/{ent['id']}", json={"row_version": 1, "quantity": "10.5"}, headers=acme
    )
    assert "(scale 0: at most 0 after the point)" in detail_of(response)
    assert client.get(f"/v1/entitlements/{ent['id']}", headers=acme).json()["quantity"] == "10"


def test_a_plan_quantity_finer_than_its_features_scale_is_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    created(client, acme, scale=0)
    body = {"key": "half", "feature": "tokens", "quantity": "0.5"}
    assert "(scale 0" in detail_of(client.post("/v1/plans", json=body, headers=acme))


def test_the_openapi_schemas_show_the_meter_fields(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    meter = {"scale", "aggregation", "event_type", "value_property", "meter_filters"}
    for name in ("FeatureIn", "FeatureOut", "FeaturePatch"):
        assert meter <= set(schemas[name]["properties"]), name
    assert set(schemas["Aggregation"]["enum"]) == {"SUM", "COUNT", "UNIQUE_COUNT", "MAX", "LATEST"}
