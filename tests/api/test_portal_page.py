"""Issue 24: the ``/portal`` page itself: served whole by meterd (its own scripts
and styles, no inline script), framable by whoever ``METERD_PORTAL_FRAME_ANCESTORS``
names, and holding no data (the page's script reads it with the link's token)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from meterd.api.app import create_app
from meterd.config import Settings
from meterd.runtime import Runtime


def assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_the_page_loads_only_meterds_own_files_and_no_inline_script(client: TestClient) -> None:
    response = client.get("/portal")
    assert response.status_code == 200
    html = response.text
    urls = assets(html)
    assert urls and all(url.startswith("/static/") and "?v=" in url for url in urls), urls
    assert "/static/portal/portal.js" in html and "/static/chart/meterd-chart.js" in html
    assert "<script>" not in html and "style=" not in html
    for url in urls:
        assert client.get(url).status_code == 200, url


def test_the_page_has_a_strict_csp_framable_by_default_and_sends_no_referrer(
    client: TestClient,
) -> None:
    response = client.get("/portal")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert "connect-src 'self'" in csp and csp.endswith("frame-ancestors *")
    assert "x-frame-options" not in response.headers
    assert response.headers["referrer-policy"] == "no-referrer"


def test_frame_ancestors_follow_the_setting(runtime: Runtime) -> None:
    runtime.settings.portal_frame_ancestors = "'self' https://app.example.com"
    app = create_app(lambda: runtime, publish_events=lambda _e: None, check_redis=False)
    csp = TestClient(app).get("/portal").headers["content-security-policy"]
    assert csp.endswith("frame-ancestors 'self' https://app.example.com")


def test_the_frame_ancestors_setting_refuses_what_could_break_out_of_the_policy() -> None:
    for bad in ("*; script-src *", "https://a.example\nx", ""):
        with pytest.raises(ValidationError):
            Settings(portal_frame_ancestors=bad, _env_file=None)  # type: ignore[call-arg]


def test_the_public_url_setting_must_be_an_http_url() -> None:
    with pytest.raises(ValidationError):
        Settings(public_url="javascript:alert(1)", _env_file=None)  # type: ignore[call-arg]
    ok = Settings(public_url="https://meter.example.com/x", _env_file=None)  # type: ignore[call-arg]
    assert ok.public_url == "https://meter.example.com/x"


def test_the_page_follows_the_root_path_behind_a_proxy(runtime: Runtime) -> None:
    app = create_app(lambda: runtime, publish_events=lambda _e: None, check_redis=False)
    html = TestClient(app, root_path="/meterd").get("/portal").text
    assert all(url.startswith("/meterd/static/") for url in assets(html))
    assert 'data-api="/meterd/portal/api"' in html
