"""The operator console in a real browser (issue 24): signed in with an API key, it
shows a customer's balances exactly as ``GET /v1/customers/{c}/features/{f}`` gives
them, a usage chart whose exact totals are the sums of ``GET /v1/usage``'s rows and
the events behind them; a key without a permission sees which one it lacks in that
section; the key lives in sessionStorage only; and the page asks no other host.

The API's clock is the real one: the data is dated from ``utcnow()``.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.testing import event

from ..helpers import grant
from .browser_support import Browser, LiveApi

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "images" / "console.png"
#: Quantities whose float sum is not their decimal sum (0.1 + 0.2).
CALLS = ["0.1", "0.2", "1.25", "3", "0.000001", "7.5"]
#: The event voided after it counted (7.5 of CALLS): its correction is a row of its own.
VOIDED = "call-5"


def key(runtime: Runtime, *permissions: Permission) -> str:
    token, _ = runtime.api_keys.create("acme", list(permissions), utcnow())
    return token


def model_event(event_id: str, quantity: str, model: str, at: Any) -> dict[str, Any]:
    e = event("cust-1", quantity, feature="tokens", event_id=event_id, time=at)
    e["data"]["model"] = model
    return e


@pytest.fixture
def customer_data(live_api: LiveApi) -> None:
    """cust-1: api_calls (one entitlement) and tokens (a limit per model), events of
    the last two days, flushed (``GET /v1/usage`` reads what the flush wrote)."""
    rt = live_api.runtime
    now = utcnow()
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    rt.catalog.create_feature("acme", "tokens", now=now, units="tokens")
    grant(rt, "cust-1", "100", starts_at=start, ends_at=end, now=now)
    for model, limit in (("gpt-4o", "5000"), ("claude", "8000")):
        grant(
            rt,
            "cust-1",
            limit,
            starts_at=start,
            ends_at=end,
            now=now,
            feature="tokens",
            filters={"model": model},
        )
    grant(rt, "cust-2", "10", starts_at=start, ends_at=end, now=now)
    events = [
        event("cust-1", q, event_id=f"call-{i}", time=now - timedelta(hours=3 + 9 * i))
        for i, q in enumerate(CALLS)
    ]
    events += [
        model_event(f"tok-{i}", q, model, now - timedelta(hours=2 + 11 * i))
        for i, (q, model) in enumerate(
            [("120", "gpt-4o"), ("75.5", "claude"), ("300", "gpt-4o"), ("12.25", "claude")]
        )
    ]
    rt.ingest.ingest(events, now=now)
    rt.flush.flush_all(utcnow())
    rt.corrections.void(
        "acme", "tests", VOIDED, reason="sent twice", actor="ops@acme", now=utcnow()
    )
    rt.flush.flush_all(utcnow())


def sign_in(browser: Browser, live_api: LiveApi, token: str, route: str) -> None:
    page = browser.page
    page.goto(f"{live_api.base_url}/console{route}")
    page.fill("#console-key", token)
    page.click("#console-signin button[type=submit]")


def api_get(live_api: LiveApi, token: str, url: str) -> Any:
    response = httpx.get(
        url if url.startswith("http") else live_api.base_url + url,
        headers={"x-api-key": token},
    )
    assert response.status_code == 200, response.text
    return response.json()


def save_screenshot(browser: Browser, tmp_path: Path) -> None:
    png = tmp_path / "console.png"
    browser.page.screenshot(path=str(png), full_page=True)
    if os.environ.get("METERD_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, SCREENSHOT)


@pytest.mark.usefixtures("customer_data")
def test_a_customers_balances_chart_and_events_equal_the_apis_figures(
    browser: Browser, live_api: LiveApi, tmp_path: Path
) -> None:
    token = key(live_api.runtime, Permission.ALL)
    page = browser.page
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(browser, live_api, token, "#/customers")
    page.wait_for_selector("#customers-list a")
    assert page.locator("#customers-list a").all_inner_texts() == ["cust-1", "cust-2"]
    page.click("#customers-list a >> text=cust-1")

    for feature in ("api_calls", "tokens"):
        box = page.locator(f".console-feature[data-feature={feature}]")
        box.locator(".console-feature-total").wait_for()
        value = api_get(live_api, token, f"/v1/customers/cust-1/features/{feature}")
        for field in ("consumed", "held", "remaining", "overage", "quantity"):
            shown = box.locator(f".console-feature-total dd[data-field={field}]").inner_text()
            assert shown == value[field], (feature, field)
        for balance in value["entitlements"]:
            row = box.locator(f"tr[data-entitlement='{balance['entitlement_id']}']")
            assert row.locator("td[data-field=consumed]").inner_text() == balance["consumed"]
            assert row.locator("td[data-field=remaining]").inner_text() == balance["remaining"]
    calls = api_get(live_api, token, "/v1/customers/cust-1/features/api_calls")
    assert calls["consumed"] == "4.550001"  # 0.1 + 0.2 + ... - 7.5 as decimals, no float

    # the chart: one series per entitlement, each total the exact sum of the API's rows
    page.locator("#usage-chart .meterd-chart-total").first.wait_for(state="attached")
    (usage_url,) = [u for u in browser.requests if urlsplit(u).path == "/v1/usage"]
    usage = api_get(live_api, token, usage_url)
    totals: dict[str, Decimal] = {}
    by_feature: dict[str, Decimal] = {}
    for row in usage["data"]:
        quantity = Decimal(row["quantity"])
        totals[row["entitlement_id"]] = totals.get(row["entitlement_id"], Decimal(0)) + quantity
        by_feature[row["feature"]] = by_feature.get(row["feature"], Decimal(0)) + quantity
    assert len(totals) == 3  # api_calls, and tokens per model: three lines
    shown_totals = page.locator("#usage-chart .meterd-chart-total").all_text_contents()
    assert sorted(Decimal(t) for t in shown_totals) == sorted(totals.values())
    assert all(t == str(Decimal(t)) for t in shown_totals)  # exact strings, as decimals
    cells = page.locator("#usage-chart td[data-exact]")
    assert all(
        "e" not in v and len(v) < 20
        for v in cells.evaluate_all("cs => cs.map(c => c.getAttribute('data-exact'))")
    )
    assert page.locator("#usage-chart .meterd-chart-plot canvas").count() >= 1

    # the events behind the figures: their counted parts add up to the chart's totals
    page.click("#events-form button[type=submit]")
    page.locator(".console-events-total").wait_for()
    for feature, total in by_feature.items():
        shown = page.locator(f".console-events-total strong[data-feature={feature}]")
        assert Decimal(shown.get_attribute("data-exact") or "x") == total
        assert shown.inner_text() == str(total)
    correction = page.locator(".console-correction")
    assert correction.count() == 1
    assert f"of {VOIDED}" in correction.inner_text() and "sent twice" in correction.inner_text()

    assert page.evaluate("window.localStorage.length") == 0
    assert page.evaluate("window.sessionStorage.getItem('meterd.console.key')") == token
    page.locator("#usage-chart details summary").first.click()
    save_screenshot(browser, tmp_path)
    assert errors == []  # no script error, nothing the CSP refused
    assert browser.foreign == []
    assert all(u.startswith(live_api.base_url) for u in browser.requests), browser.requests


def test_a_key_without_a_permission_sees_what_it_lacks_in_that_section(
    browser: Browser, live_api: LiveApi
) -> None:
    token = key(live_api.runtime, Permission.ENTITLEMENTS_VIEW)
    page = browser.page
    sign_in(browser, live_api, token, "#/dead-letters")
    lacks = page.locator("#dead-letters-list .console-lacks")
    lacks.wait_for()
    assert lacks.get_attribute("data-lacks") == "EVENTS:WRITE"
    assert "Your key lacks EVENTS:WRITE" in lacks.inner_text()
    page.click("nav a[data-section=health]")
    lacks = page.locator("#health-status .console-lacks")
    lacks.wait_for()
    assert lacks.get_attribute("data-lacks") == "METRICS:VIEW"
    page.click("nav a[data-section=customers]")
    page.locator("#customers-list .console-body p").wait_for()  # the section it may see
    assert page.locator("#customers-list .console-lacks").count() == 0
    assert browser.foreign == []


def test_sign_out_forgets_the_key(browser: Browser, live_api: LiveApi) -> None:
    token = key(live_api.runtime, Permission.ENTITLEMENTS_VIEW)
    page = browser.page
    sign_in(browser, live_api, token, "#/customers")
    page.locator("#customers-list .console-body p").wait_for()
    page.click("#console-sign-out")
    page.locator("#console-key").wait_for()
    assert page.evaluate("window.sessionStorage.length") == 0
    assert page.evaluate("window.localStorage.length") == 0


def test_a_key_that_is_not_valid_is_sent_back_to_sign_in(
    browser: Browser, live_api: LiveApi
) -> None:
    page = browser.page
    sign_in(browser, live_api, "not-a-key", "#/customers")
    page.locator("#console-signin .meterd-error").wait_for()
    assert "not valid" in page.locator("#console-signin .meterd-error").inner_text()
    assert page.evaluate("window.sessionStorage.length") == 0


@pytest.mark.usefixtures("customer_data")
def test_the_console_holds_on_a_phone_sized_screen(browser: Browser, live_api: LiveApi) -> None:
    token = key(live_api.runtime, Permission.ALL)
    page = browser.page
    page.set_viewport_size({"width": 375, "height": 800})
    sign_in(browser, live_api, token, "#/customer/cust-1")
    page.locator(".console-feature-total").first.wait_for()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375 + 1


def test_an_operator_replays_a_dead_letter_and_manages_alert_rules(
    browser: Browser, live_api: LiveApi
) -> None:
    rt = live_api.runtime
    now = utcnow()
    rt.ingest.ingest([event("nobody", "2", event_id="lost-1", time=now)], now=now)
    token = key(rt, Permission.ALL)
    page = browser.page
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(browser, live_api, token, "#/dead-letters")
    row = page.locator("#dead-letters-list tr[data-dead-letter]")
    row.wait_for()
    assert "no_entitlement" in row.inner_text()
    row.locator("button").click()
    outcome = page.locator("#replay-outcome")
    outcome.filter(has_text="Replayed").wait_for()
    assert outcome.inner_text() == "Replayed 1, still dead 1 (no_entitlement 1)."

    page.click("nav a[data-section=alert-rules]")
    page.fill("#rule-threshold", "150")
    page.fill("#rule-feature", "api_calls")
    page.click("#rule-form button[type=submit]")
    rule = page.locator("#alert-rules-list tr[data-rule]")
    rule.wait_for()
    (listed,) = api_get(live_api, token, "/v1/alert-rules")
    assert listed["threshold"] == "150" and listed["feature"] == "api_calls"
    assert rule.get_attribute("data-rule") == listed["id"]
    rule.locator("button").click()
    page.locator("#alert-rules-list .console-body p").wait_for()
    assert api_get(live_api, token, "/v1/alert-rules") == []
    assert browser.foreign == []


def test_a_hold_is_looked_up_and_queue_health_shows_meterd_status(
    browser: Browser, live_api: LiveApi
) -> None:
    rt = live_api.runtime
    now = utcnow()
    grant(
        rt,
        "cust-1",
        "100",
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=9),
        now=now,
    )
    token = key(rt, Permission.ALL)
    reserved = httpx.post(
        f"{live_api.base_url}/v1/customers/cust-1/features/api_calls/reserve",
        headers={"x-api-key": token},
        json={"quantity": "2.5", "idempotency_key": "h-1", "hold_seconds": 120},
    )
    assert reserved.status_code == 200, reserved.text
    hold_id = reserved.json()["hold"]["id"]
    page = browser.page
    sign_in(browser, live_api, token, f"#/holds?id={hold_id}")
    held = page.locator("#hold-result dd[data-field=held]")
    held.wait_for()
    assert held.inner_text() == "2.5"
    assert page.locator("#hold-result dd[data-field=status]").inner_text() == "held"

    page.click("nav a[data-section=health]")
    card = page.locator("#health-status [data-figure=dead-letters] .meterd-figure")
    card.wait_for()
    status = api_get(live_api, token, "/v1/status")
    assert card.inner_text() == str(sum(status["dead_letters"].values()))
    assert (
        page.locator("#health-status [data-figure=redis-safety]")
        .inner_text()
        .endswith(status["redis_safety"]["state"])
    )
    assert browser.foreign == []


@pytest.mark.usefixtures("customer_data")
def test_the_chart_counts_from_midnight_in_the_zone_chosen(
    browser: Browser, live_api: LiveApi
) -> None:
    token = key(live_api.runtime, Permission.ALL)
    page = browser.page
    sign_in(browser, live_api, token, "#/customer/cust-1")
    page.locator("#usage-chart .meterd-chart-total").first.wait_for(state="attached")
    page.fill("#usage-tz", "Asia/Kolkata")
    with page.expect_response(lambda r: urlsplit(r.url).path == "/v1/usage") as answer:
        page.click("#usage-form button[type=submit]")
    body = answer.value.json()
    assert body["tz"] == "Asia/Kolkata"
    assert body["from"].endswith("T00:00:00+05:30") and body["to"].endswith("T00:00:00+05:30")
    page.locator("#usage-chart .meterd-chart-total").first.wait_for(state="attached")
    usage = api_get(live_api, token, answer.value.url)
    shown = page.locator("#usage-chart .meterd-chart-total").all_text_contents()
    assert sum(Decimal(t) for t in shown) == sum(Decimal(r["quantity"]) for r in usage["data"])


def test_webhook_deliveries_list_the_notifications_the_api_gives(
    browser: Browser, live_api: LiveApi
) -> None:
    rt = live_api.runtime
    now = utcnow()
    grant(
        rt,
        "cust-1",
        "10",
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=9),
        now=now,
    )
    rt.ingest.ingest([event("cust-1", "9", event_id="big-1", time=now)], now=now)
    rt.flush.flush_all(utcnow())
    token = key(rt, Permission.ALL)
    notes = api_get(live_api, token, "/v1/notifications")["data"]
    assert notes, "crossing 80 % of the quantity notifies"
    page = browser.page
    sign_in(browser, live_api, token, "#/deliveries")
    rows = page.locator("#deliveries-list tr[data-notification]")
    rows.first.wait_for()
    assert [rows.nth(i).get_attribute("data-notification") for i in range(rows.count())] == [
        n["id"] for n in notes
    ]
    rows.first.locator("button").click()  # still pending: the API changes nothing, says so
    said = page.locator("#deliveries-list p[role=status]")
    said.filter(has_text="pending").wait_for()
    assert said.inner_text() == f"{notes[0]['id']} was still pending: nothing changed."
    assert browser.foreign == []
