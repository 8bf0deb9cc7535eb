"""``/docs`` in a real browser with no other host reachable (issue 24): Swagger UI
draws the operations list and its Authorize button from meterd's own assets, and
the network log holds no request to another host."""

from __future__ import annotations

from .browser_support import Browser, LiveApi


def test_docs_render_the_operations_offline_with_an_authorize_button(
    browser: Browser, live_api: LiveApi
) -> None:
    page = browser.page
    page.goto(f"{live_api.base_url}/docs")
    page.wait_for_selector(".opblock", state="attached")
    assert page.locator(".opblock").count() > 40
    assert page.locator("button.authorize").count() >= 1
    assert browser.foreign == []
    assert all(url.startswith(live_api.base_url) for url in browser.requests), browser.requests


def test_redoc_renders_the_operations_offline(browser: Browser, live_api: LiveApi) -> None:
    page = browser.page
    page.goto(f"{live_api.base_url}/redoc")
    page.wait_for_selector("[data-section-id^='tag/'], [data-section-id^='operation/']")
    assert page.locator("[data-section-id^='operation/']").count() > 40
    assert browser.foreign == []
