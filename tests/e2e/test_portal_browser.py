"""The customer portal in a real browser (issue 24): a link minted by
``POST /v1/portal-tokens`` shows its customer's exact consumption (a scale-6
feature, 1234.000001 consumed) and nothing of another customer, in the page's
text and in every response the page received; an expired or forged link shows a
clear page and no data; no request leaves meterd's host; the theme parameters
apply; the page holds at a phone's width. A screenshot of the page is saved to
the test's tmp_path, and to ``docs/images/portal.png`` with
``METERD_UPDATE_SCREENSHOTS=1``."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.services.portal_tokens import AUDIENCE, ISSUER
from meterd.storage.portal_keys import PortalKeyStore
from meterd.testing import event

from ..conftest import NOW
from ..helpers import grant
from .browser_support import Browser, LiveApi

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "images" / "portal.png"

#: The customer's figures (exact, scale 6), and the other customer's, which must
#: never reach the page.
CONSUMED = "1234.000001"
REMAINING = "3765.999999"
OTHER = ("cust-2", "4321.987654", "8888.5")


@pytest.fixture
def portal_data(live_api: LiveApi) -> None:
    rt = live_api.runtime
    now = utcnow()
    rt.catalog.create_feature("acme", "tokens", now=now, units="tokens", name="LLM tokens", scale=6)
    for customer, quantity in (("cust-1", "5000"), ("cust-2", "8888.5")):
        grant(
            rt,
            customer,
            quantity,
            feature="tokens",
            starts_at=now - timedelta(days=40),
            ends_at=now + timedelta(days=20),
            now=now,
        )
    day = timedelta(days=1)
    used = [
        ("cust-1", "1000", now - 3 * day),
        ("cust-1", "234.000001", now - timedelta(minutes=5)),
        ("cust-2", OTHER[1], now - 2 * day),
    ]
    batch = [
        event(c, q, feature="tokens", event_id=f"e{i}", time=t) for i, (c, q, t) in enumerate(used)
    ]
    rt.ingest.ingest(batch, now=now)
    rt.flush.flush_all(now)


def mint(live_api: LiveApi, customer: str = "cust-1", expires_in: int = 600) -> dict[str, Any]:
    token, _ = live_api.runtime.api_keys.create("acme", [Permission.ENTITLEMENTS_VIEW], NOW)
    response = httpx.post(
        f"{live_api.base_url}/v1/portal-tokens",
        json={"customer_id": customer, "expires_in": expires_in},
        headers={"x-api-key": token},
    )
    assert response.status_code == 201, response.text
    minted: dict[str, Any] = response.json()
    return minted


def themed(url: str, **theme: str) -> str:
    """``url`` (``.../portal#token=...``) with theme parameters before its fragment."""
    page, fragment = url.split("#", 1)
    query = "&".join(f"{k}={v}" for k, v in theme.items())
    return f"{page}?{query}#{fragment}"


def save_screenshot(page: Any, tmp_path: Path) -> None:
    shot = tmp_path / "portal.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("METERD_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


class Watched:
    """The responses a page received and the console's CSP complaints."""

    def __init__(self, page: Any) -> None:
        self.responses: list[Any] = []
        self.csp: list[str] = []
        page.on("response", self._response)
        page.on("console", self._console)

    def _response(self, response: Any) -> None:
        self.responses.append(response)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp.append(message.text)

    def bodies(self) -> str:
        texts = []
        for response in self.responses:
            try:
                texts.append(response.text())
            except Exception:  # a redirect or an aborted request has no body
                continue
        return "\n".join(texts)


def test_the_portal_shows_the_customers_exact_consumption_and_nothing_of_another(
    browser: Browser, live_api: LiveApi, portal_data: None, tmp_path: Path
) -> None:
    page = browser.page
    watched = Watched(page)
    url = mint(live_api)["url"]
    page.goto(themed(url, accent="%23b45309", radius="10px", font="Georgia"))
    page.wait_for_selector("main[data-ready='true']")

    card = page.locator("[data-feature='tokens']")
    assert card.locator("[data-figure='consumed']").inner_text() == CONSUMED
    assert card.locator("[data-figure='remaining']").inner_text() == REMAINING
    assert card.locator("[data-figure='quantity']").inner_text() == "5000"
    save_screenshot(page, tmp_path)
    page.locator(".meterd-chart-table summary").click()
    assert page.locator(".meterd-chart-total").all_inner_texts() == [CONSUMED]
    assert page.locator(".meterd-chart-plot canvas").count() >= 1

    text = page.locator("body").inner_text()
    html = page.content()
    bodies = watched.bodies()
    for secret in OTHER:
        assert secret not in text and secret not in html, secret
        assert secret not in bodies, secret
    assert CONSUMED in bodies

    accent = page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--meterd-accent')"
    )
    assert accent.strip() == "#b45309"
    assert browser.foreign == []
    assert watched.csp == []


def test_the_portal_holds_at_a_phones_width(
    browser: Browser, live_api: LiveApi, portal_data: None
) -> None:
    page = browser.page
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(mint(live_api)["url"])
    page.wait_for_selector("main[data-ready='true']")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    reached = []
    for _ in range(10):  # the keyboard reaches the chart's table of figures
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.tagName"))
    assert "SUMMARY" in reached, reached


def test_theme_parameters_that_are_not_a_colour_length_or_font_are_ignored(
    browser: Browser, live_api: LiveApi, portal_data: None
) -> None:
    page = browser.page
    url = mint(live_api)["url"]
    page.goto(themed(url, accent="red;background:url(x)", font="x%7D%3Bbody%7Bdisplay:none"))
    page.wait_for_selector("main[data-ready='true']")
    accent = page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--meterd-accent')"
    )
    assert accent.strip() == "#1d4ed8"
    assert browser.foreign == []


def expired_token(runtime: Runtime) -> str:
    """A token signed with the store's own key, past its expiry."""
    key = PortalKeyStore(runtime.database.sessions).current(utcnow())
    past = int(utcnow().timestamp()) - 3600
    claims = {"iss": ISSUER, "aud": AUDIENCE, "org": "acme", "sub": "cust-1",
              "iat": past - 600, "exp": past, "jti": "old"}  # fmt: skip
    return jwt.encode(claims, key.secret, algorithm="HS256", headers={"kid": key.kid})


def shows_no_data(page: Any, watched: Watched) -> None:
    text = page.locator("body").inner_text()
    for figure in (CONSUMED, "5000", "tokens", *OTHER):
        assert figure not in text, figure
        assert figure not in watched.bodies(), figure


def test_an_expired_link_shows_a_clear_page_and_no_data(
    browser: Browser, live_api: LiveApi, portal_data: None
) -> None:
    page = browser.page
    watched = Watched(page)
    page.goto(f"{live_api.base_url}/portal#token={expired_token(live_api.runtime)}")
    message = page.wait_for_selector("[role='alert']")
    assert "This link has expired: ask for a new one" in message.inner_text()
    shows_no_data(page, watched)
    assert browser.foreign == []


def test_a_forged_link_shows_a_clear_page_and_no_data(
    browser: Browser, live_api: LiveApi, portal_data: None
) -> None:
    page = browser.page
    watched = Watched(page)
    token = mint(live_api)["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(token)["kid"]
    forged = jwt.encode(claims, b"not the key" * 3, algorithm="HS256", headers={"kid": kid})
    page.goto(f"{live_api.base_url}/portal#token={forged}")
    message = page.wait_for_selector("[role='alert']")
    assert "This link is not valid" in message.inner_text()
    shows_no_data(page, watched)
    page.goto(f"{live_api.base_url}/portal")
    page.reload()
    assert "This link is not valid" in page.wait_for_selector("[role='alert']").inner_text()
    assert browser.foreign == []
