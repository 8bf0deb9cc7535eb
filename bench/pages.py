"""The console and the portal in a real browser: how much each page loads and how
long it takes until its figures are on screen, beside ``/docs`` (Swagger UI, the
reference: the heaviest page meterd serves, measured in the same run).

The API runs in this process (uvicorn on a loopback port) over fakeredis and a
temporary SQLite database, with one customer, two features and 300 events flushed;
Debian's headless Chromium (Playwright, ``executable_path``) loads each page with
an empty cache --runs times. Printed per page: the bytes received (the bodies of
every response), the number of requests, and the median milliseconds from
navigation to the page's "ready" mark (the console's balances drawn, the portal's
``main[data-ready]``, Swagger's operations list).

    python bench/pages.py            # 5 runs each
    python bench/pages.py --runs 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import uvicorn

from meterd.api.app import create_app
from meterd.config import Settings
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.services.catalog import NewEntitlement
from meterd.storage.database import Database
from meterd.storage.migrate import upgrade
from meterd.testing import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class _NoBroker:
    def connection_for_read(self) -> Any:
        raise ConnectionError("no broker in the bench")


def usage(n: int, now: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0", "id": f"e-{n}", "source": "bench", "type": "meterd.usage",
        "subject": "cust-1", "org": "acme", "time": (now - timedelta(hours=n * 2)).isoformat(),
        "data": {"feature": ("api_calls", "tokens")[n % 2], "quantity": f"{n}.25"},
    }  # fmt: skip


def seeded_runtime(db_url: str) -> tuple[Runtime, str]:
    settings = Settings(
        database_url=db_url,
        redis_prefix="pages",
        _env_file=None,  # type: ignore[call-arg]
    )
    rt = Runtime(settings=settings, redis=fakeredis.FakeRedis(), database=Database.connect(db_url))
    now = utcnow()
    rt.catalog.create_org("acme", "Acme", now - timedelta(days=40))
    for feature in ("api_calls", "tokens"):
        rt.catalog.create_feature("acme", feature, now=now - timedelta(days=40))
        rt.catalog.create_entitlement(
            NewEntitlement(
                org="acme",
                customer_id="cust-1",
                feature=feature,
                quantity=None,
                starts_at=now - timedelta(days=31),
            ),
            now,
        )
    events = [usage(n, now) for n in range(1, 301)]
    rt.ingest.ingest(events, now=now)
    rt.flush.flush_all(now)
    token, _ = rt.api_keys.create("acme", [Permission.ALL], now)
    return rt, token


def load(browser: Any, url: str, ready: str, key: str | None) -> tuple[int, int, float]:
    """(bytes received, requests, ms to ``ready``) of one load with an empty cache."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    received: list[int] = []

    def on_response(response: Any) -> None:
        try:
            received.append(len(response.body()))
        except Exception:  # a redirect or an aborted response has no body
            received.append(0)

    page.on("response", on_response)
    started = time.perf_counter()
    page.goto(url)
    if key is not None:  # the console: sign in first
        page.fill("#console-key", key)
        page.click("#console-signin button[type=submit]")
    page.wait_for_selector(ready, state="attached", timeout=30_000)
    elapsed = (time.perf_counter() - started) * 1000
    page.wait_for_load_state("networkidle")
    context.close()
    return sum(received), len(received), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'pages.db'}"
        upgrade(db_url)
        rt, token = seeded_runtime(db_url)
        app = create_app(lambda: rt, publish_events=lambda _e: None, celery_app=_NoBroker)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        minted = httpx.post(
            f"{base}/v1/portal-tokens",
            json={"customer_id": "cust-1", "expires_in": 3600},
            headers={"x-api-key": token},
        ).json()
        pages = [
            ("/docs (reference)", f"{base}/docs", ".opblock", None),
            ("/console (a customer)", f"{base}/console#/customer/cust-1",
             ".console-feature-total", token),
            ("/portal", minted["url"], "main[data-ready='true']", None),
        ]  # fmt: skip
        figures: dict[str, tuple[int, int, list[float]]] = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            for _ in range(args.runs):  # interleaved: a shared machine's drift hits all
                for name, url, ready, key in pages:
                    size, requests, ms = load(browser, url, ready, key)
                    kept = figures.setdefault(name, (size, requests, []))
                    kept[2].append(ms)
            browser.close()
        server.should_exit = True
    ref_size, _, ref_ms = figures["/docs (reference)"]
    print(f"pages bench: headless Chromium, empty cache, median of {args.runs} loads")
    for name, (size, requests, times) in figures.items():
        ms = statistics.median(times)
        print(
            f"  {name:<24} {size / 1024:>8,.0f} KiB in {requests:>2} requests"
            f" ({size / ref_size:.2f}x /docs)   ready in {ms:>6,.0f} ms"
            f" ({ms / statistics.median(ref_ms):.2f}x /docs)"
        )


if __name__ == "__main__":
    main()
