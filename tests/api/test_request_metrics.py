"""The API counts its own requests (``api/request_metrics.py``): rate, latency and
errors per route template, on ``GET /metrics`` beside the cluster-wide numbers."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from .conftest import key_for


def scrape(client: TestClient, runtime: Runtime) -> dict[str, list[tuple[dict[str, str], float]]]:
    headers = key_for(runtime, "acme", Permission.METRICS_VIEW)
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_a_request_is_counted_under_its_route_template_and_status(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    for customer in ("c-1", "c-2", "c-3"):
        client.get(f"/v1/customers/{customer}/features/api_calls", headers=acme)
    counted = scrape(client, runtime)["meterd_api_requests_total"]
    route = "/v1/customers/{customer_id}/features/{feature}"
    hits = [v for labels, v in counted if labels["route"] == route and labels["method"] == "GET"]
    assert sum(hits) == 3
    assert not any("c-1" in labels["route"] for labels, _ in counted)


def test_an_error_is_counted_with_its_status(client: TestClient, runtime: Runtime) -> None:
    client.get("/v1/entitlements")  # no key: 401
    counted = scrape(client, runtime)["meterd_api_requests_total"]
    assert any(
        labels["route"] == "/v1/entitlements" and labels["status"] == "401" and v == 1
        for labels, v in counted
    ), counted


def test_a_path_no_route_matches_is_one_series(client: TestClient, runtime: Runtime) -> None:
    for n in range(5):
        client.get(f"/no/such/path/{n}")
    counted = scrape(client, runtime)["meterd_api_requests_total"]
    unmatched = [(labels, v) for labels, v in counted if labels["route"] == "unmatched"]
    assert len(unmatched) == 1 and unmatched[0][1] == 5, unmatched


def test_latency_is_a_histogram_per_route(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    client.get("/v1/features", headers=acme)
    found = scrape(client, runtime)
    counts = [
        v
        for labels, v in found["meterd_api_request_duration_seconds_count"]
        if labels["route"] == "/v1/features"
    ]
    assert counts == [1.0]
    inf = [
        v
        for labels, v in found["meterd_api_request_duration_seconds_bucket"]
        if labels["route"] == "/v1/features" and labels["le"] == "+Inf"
    ]
    assert inf == [1.0]
