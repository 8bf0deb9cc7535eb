"""The console's routes: ``/console`` is served whole with a CSP of 'self', and the
two JSON routes it added, ``GET /v1/customers`` (the org's customer ids, keyset
pages, bounded) and ``GET /v1/status`` (``meterd status`` as JSON), each behind
its permission."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from meterd.api.app import create_app
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from ..helpers import grant
from .conftest import key_for


def test_the_console_page_is_served_with_a_csp_of_self_and_no_inline_script(
    client: TestClient,
) -> None:
    response = client.get("/console")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    page = response.text
    assert "{{" not in page  # every placeholder filled
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)  # no inline script
    assert "style=" not in page and "<style" not in page
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", page)  # nothing from another host


def test_every_asset_of_the_console_page_is_served_with_its_version(client: TestClient) -> None:
    page = client.get("/console").text
    assets = re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", page)
    assert len(assets) == 6
    for url in assets:
        assert re.search(r"\?v=[0-9a-f]{12}$", url), url
        assert client.get(url).status_code == 200, url


def test_the_console_follows_the_root_path_behind_a_proxy() -> None:
    app = create_app(lambda: None, publish_events=lambda _e: None, check_redis=False)  # type: ignore[arg-type, return-value]
    page = TestClient(app, root_path="/meterd").get("/console").text
    assets = re.findall(r"(?:src|href)=\"(/[^\"]*)\"", page)
    assert len(assets) == 6 and all(url.startswith("/meterd/static/") for url in assets), assets
    assert 'data-root="/meterd"' in page  # the script calls /meterd/v1/...


def test_the_console_page_is_left_out_of_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/console" not in paths and "/v1/customers" in paths and "/v1/status" in paths


def customers(client: TestClient, headers: dict[str, str], **params: object) -> dict:
    response = client.get("/v1/customers", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


def test_customers_are_listed_in_id_order_with_their_entitlement_counts(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    for customer in ("cust-b", "cust-a", "cust-b", "other"):
        grant(runtime, customer)
    grant(runtime, "globex-cust", org="globex")
    assert customers(client, acme)["data"] == [
        {"customer_id": "cust-a", "entitlements": 1},
        {"customer_id": "cust-b", "entitlements": 2},
        {"customer_id": "other", "entitlements": 1},
    ]


def test_customers_page_by_cursor_without_repeating_or_skipping(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ids = [f"c-{i:02d}" for i in range(7)]
    for customer in ids:
        grant(runtime, customer)
    seen, cursor, pages = [], None, 0
    while True:
        page = customers(client, acme, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [c["customer_id"] for c in page["data"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ids and pages == 3


def test_the_last_full_page_has_no_next_cursor(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    for customer in ("a", "b"):
        grant(runtime, customer)
    assert customers(client, acme, limit=2)["next"] is None


def test_a_prefix_keeps_only_ids_starting_with_it_and_its_wildcards_are_literal(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    for customer in ("team_1", "teamX1", "team%", "tea", "other-team_1"):
        grant(runtime, customer)
    listed = [c["customer_id"] for c in customers(client, acme, prefix="team_")["data"]]
    assert listed == ["team_1"]
    listed = [c["customer_id"] for c in customers(client, acme, prefix="team")["data"]]
    assert listed == ["team%", "teamX1", "team_1"]


def test_a_prefix_pages_by_cursor_too(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    for customer in ("p-1", "p-2", "p-3", "q-1"):
        grant(runtime, customer)
    first = customers(client, acme, prefix="p-", limit=2)
    rest = customers(client, acme, prefix="p-", limit=2, cursor=first["next"])
    ids = [c["customer_id"] for c in first["data"] + rest["data"]]
    assert ids == ["p-1", "p-2", "p-3"] and rest["next"] is None


def test_the_customer_page_limit_is_bounded(client: TestClient, acme: dict[str, str]) -> None:
    for limit in (0, 201):
        response = client.get(f"/v1/customers?limit={limit}", headers=acme)
        assert response.status_code == 400, limit
    assert client.get("/v1/customers?limit=200", headers=acme).status_code == 200


def test_a_customer_cursor_that_is_not_one_is_a_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = client.get("/v1/customers?cursor=not-a-cursor", headers=acme)
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


def test_listing_customers_needs_entitlements_view(client: TestClient, runtime: Runtime) -> None:
    writer = key_for(runtime, "acme", Permission.EVENTS_WRITE)
    response = client.get("/v1/customers", headers=writer)
    assert response.status_code == 403
    assert "ENTITLEMENTS:VIEW" in response.json()["detail"]
    viewer = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    assert client.get("/v1/customers", headers=viewer).status_code == 200
    assert client.get("/v1/customers").status_code == 401


def test_status_answers_what_meterd_status_prints(client: TestClient, runtime: Runtime) -> None:
    operator = key_for(runtime, "acme", Permission.METRICS_VIEW)
    response = client.get("/v1/status?sample=0", headers=operator)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "queues",
        "flush_lag_seconds",
        "dead_letters",
        "events_total",
        "events_per_second",
        "workers",
        "storage",
        "redis_safety",
        "errors",
    }
    # no broker in API tests: its parts are empty and named, the rest is read
    assert all(q["ready"] is None for q in body["queues"])
    assert any(e.startswith("queues:") for e in body["errors"])
    assert body["redis_safety"]["state"] in ("safe", "unsafe_allowed")
    assert body["events_per_second"] is None


def test_status_counts_dead_letters_by_reason(client: TestClient, runtime: Runtime) -> None:
    from meterd.core.timeutil import utcnow
    from meterd.testing import event

    now = utcnow()
    runtime.ingest.ingest([event(customer="nobody", event_id="x", time=now)], now=now)
    operator = key_for(runtime, "acme", Permission.METRICS_VIEW)
    body = client.get("/v1/status?sample=0", headers=operator).json()
    assert body["dead_letters"] == {"no_entitlement": 1}


def test_status_needs_metrics_view(client: TestClient, runtime: Runtime) -> None:
    viewer = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    response = client.get("/v1/status?sample=0", headers=viewer)
    assert response.status_code == 403
    assert "METRICS:VIEW" in response.json()["detail"]


def test_the_status_sample_is_bounded(client: TestClient, runtime: Runtime) -> None:
    operator = key_for(runtime, "acme", Permission.METRICS_VIEW)
    assert client.get("/v1/status?sample=1.5", headers=operator).status_code == 400
    assert client.get("/v1/status?sample=-1", headers=operator).status_code == 400
