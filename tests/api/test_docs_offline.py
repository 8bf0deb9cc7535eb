"""Issue 24 item 3: ``/docs`` and ``/redoc`` are served whole by meterd (no asset from
another host), and the OpenAPI document declares its security schemes, with the
answers of the auth dependency (401, 403, 429) on every operation that takes a key.

A real browser renders ``/docs`` offline in ``tools/docs_screenshot.py``."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.api import docs_pages
from meterd.api.app import create_app

PAGES = ["/docs", "/redoc"]
PUBLIC = {"/healthz", "/readyz"}
SCHEMES: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
#: The customer portal's JSON: a portal token, never an API key (``meterd.api.portal``).
PORTAL = {"/portal/api/overview", "/portal/api/usage"}
PORTAL_SCHEMES: list[dict[str, list[str]]] = [{"PortalToken": []}]
#: The least a real copy weighs, and the type it is served as, by extension.
ASSETS = {
    ".js": (500_000, "text/javascript"),
    ".css": (100_000, "text/css"),
    ".png": (300, "image/png"),
}
MISSING_KEY = {
    "type": "about:blank",
    "title": "Unauthorized",
    "status": 401,
    "detail": "an API key is required (x-api-key or Authorization: Bearer)",
}
FEATURES = "/v1/features"


class Links(HTMLParser):
    """Every URL a page makes the browser load: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {"script": "src", "link": "href", "img": "src"}
        wanted = names.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


def links(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def docs_client() -> TestClient:
    """The app without stores: the pages, the assets and the document need none."""
    app = create_app(lambda: None, publish_events=lambda _e: None, check_redis=False)  # type: ignore[arg-type, return-value]
    return TestClient(app)


@pytest.fixture(scope="module")
def spec(docs_client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = docs_client.get("/openapi.json").json()
    return document


@pytest.mark.parametrize("page", PAGES)
def test_the_page_loads_scripts_and_styles_from_meterd_only(
    docs_client: TestClient, page: str
) -> None:
    response = docs_client.get(page)
    assert response.status_code == 200
    urls = links(response.text)
    assert any(url.split("?")[0].endswith(".js") for url in urls), urls
    for url in urls:
        assert url.startswith("/static/") and not url.startswith("//"), url
    assert "http://" not in response.text and "https://" not in response.text
    assert "fonts.googleapis" not in response.text


@pytest.mark.parametrize("page", PAGES)
def test_each_asset_of_the_page_is_served_whole_with_its_type_and_a_cache_header(
    docs_client: TestClient, page: str
) -> None:
    for url in links(docs_client.get(page).text):
        response = docs_client.get(url)
        least, media_type = ASSETS["." + url.split("?")[0].rsplit(".", 1)[1]]
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith(media_type), url
        assert len(response.content) >= least, url
        assert response.headers["cache-control"] == docs_pages.CACHE_CONTROL


def test_asset_urls_carry_the_vendored_version(docs_client: TestClient) -> None:
    urls = links(docs_client.get("/docs").text) + links(docs_client.get("/redoc").text)
    assert f"/static/swagger-ui/swagger-ui-bundle.js?v={docs_pages.SWAGGER_UI_VERSION}" in urls
    assert f"/static/redoc/redoc.standalone.js?v={docs_pages.REDOC_VERSION}" in urls


def test_the_vendored_versions_are_the_ones_the_static_readme_names() -> None:
    readme = (docs_pages.STATIC_DIR / "README.md").read_text()
    assert f"`swagger-ui-dist` {docs_pages.SWAGGER_UI_VERSION}" in readme
    assert f"`redoc` {docs_pages.REDOC_VERSION}" in readme


def test_swagger_ui_reads_this_apps_document_and_asks_no_online_validator(
    docs_client: TestClient,
) -> None:
    html = docs_client.get("/docs").text
    assert "url: '/openapi.json'" in html
    assert '"validatorUrl": null' in html


def test_the_pages_and_assets_follow_the_root_path_behind_a_proxy() -> None:
    app = create_app(lambda: None, publish_events=lambda _e: None, check_redis=False)  # type: ignore[arg-type, return-value]
    proxied = TestClient(app, root_path="/meterd")
    html = proxied.get("/docs").text
    assert "url: '/meterd/openapi.json'" in html
    urls = links(html)
    assert urls and all(url.startswith("/meterd/static/") for url in urls), urls


def test_the_document_declares_the_api_key_and_bearer_schemes(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"] == {
        "ApiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
            "description": "An API key (`meterd keys create`), in the x-api-key header.",
        },
        "Bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "The same API key, as `Authorization: Bearer <key>`.",
        },
        "PortalToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "A customer portal token (`POST /v1/portal-tokens`), as"
            " `Authorization: Bearer <token>`: reads one customer, never the API.",
        },
    }


def test_every_operation_but_the_health_checks_takes_either_scheme(
    spec: dict[str, Any],
) -> None:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            expected = None if path in PUBLIC else PORTAL_SCHEMES if path in PORTAL else SCHEMES
            assert operation.get("security") == expected, (method, path)


def test_no_operation_declares_the_key_as_a_header_parameter(spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            names = {p["name"].lower() for p in operation.get("parameters", [])}
            assert not names & {"x-api-key", "authorization"}, (method, path)


def test_every_secured_operation_declares_401_403_and_429_with_retry_after(
    spec: dict[str, Any],
) -> None:
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if path in PUBLIC:
                assert not {"401", "403", "429"} & set(responses), (method, path)
                continue
            if path in PORTAL:  # a token, not a key: no permission and no key's limit
                assert {"401", "403", "429"} & set(responses) == {"401"}, (method, path)
                assert responses["401"]["content"] == problem
                continue
            assert {"401", "403", "429"} <= set(responses), (method, path)
            assert responses["429"]["content"] == problem
            assert "Retry-After" in responses["429"]["headers"]


def test_a_missing_key_is_the_same_401_problem_as_before(client: TestClient) -> None:
    response = client.get(FEATURES)
    assert response.status_code == 401
    assert response.json() == MISSING_KEY
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    "])
def test_an_authorization_header_without_a_bearer_key_is_a_missing_key(
    client: TestClient, authorization: str
) -> None:
    response = client.get(FEATURES, headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json() == MISSING_KEY


def test_a_bearer_key_is_read_with_its_spaces_trimmed(
    client: TestClient, acme: dict[str, str]
) -> None:
    headers = {"Authorization": f"bearer   {acme['x-api-key']}  "}
    assert client.get(FEATURES, headers=headers).status_code == 200


def test_x_api_key_wins_over_an_authorization_header(
    client: TestClient, acme: dict[str, str]
) -> None:
    headers = {**acme, "Authorization": "Bearer not-a-key"}
    assert client.get(FEATURES, headers=headers).status_code == 200


def test_a_bad_bearer_key_is_401_not_valid(client: TestClient) -> None:
    response = client.get(FEATURES, headers={"Authorization": "Bearer not-a-key"})
    assert response.status_code == 401
    assert response.json()["detail"] == "the API key is not valid"
