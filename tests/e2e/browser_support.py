"""A real browser on a real server: ``meterd api``'s app served by uvicorn on a free
loopback port over the test runtime, and Debian's headless Chromium driven by
Playwright (``executable_path``: no browser download).

Every request a page makes is recorded (``Browser.requests``), and any request to
another host is aborted and recorded as such (``Browser.foreign``): a test asserts
on the network log, not only on the HTML, that a page loads nothing from
elsewhere. Missing Chromium fails in CI (``require``) and skips elsewhere.

The fixtures ``live_api`` and ``browser`` are registered by ``tests/e2e/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from meterd.api.app import create_app
from meterd.runtime import Runtime
from meterd.testing import free_port

from ..api.conftest import NoBroker
from ..conftest import require

CHROMIUM = os.environ.get("METERD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@dataclass
class LiveApi:
    base_url: str
    runtime: Runtime
    #: the ``meterd.ingest_batch`` messages the API published
    published: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc


@pytest.fixture
def live_api(runtime: Runtime) -> Iterator[LiveApi]:
    """The API of ``runtime`` on a free loopback port, for the length of a test."""
    import uvicorn

    live = LiveApi(base_url="", runtime=runtime)
    app = create_app(lambda: runtime, publish_events=live.published.append, celery_app=NoBroker)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    live.base_url = f"http://127.0.0.1:{port}"
    try:
        yield live
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Browser:
    """One page of a fresh browser context, its network log kept."""

    page: Any
    allowed_host: str
    requests: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def _route(self, route: Any) -> None:
        url = route.request.url
        self.requests.append(url)
        scheme = urlsplit(url).scheme
        if scheme in ("data", "blob", "about"):
            route.continue_()
        elif urlsplit(url).netloc != self.allowed_host:
            self.foreign.append(url)
            route.abort()
        else:
            route.continue_()


@pytest.fixture
def browser(live_api: LiveApi) -> Iterator[Browser]:
    """Headless Chromium (Debian's), one page; requests to any host but the live
    API's are aborted and recorded in ``foreign``."""
    if not os.path.exists(CHROMIUM):
        require("Chromium", FileNotFoundError(f"{CHROMIUM}: apt-get install chromium"))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = chromium.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)
            found = Browser(page=page, allowed_host=live_api.host)
            context.route("**/*", found._route)
            yield found
            context.close()
        finally:
            chromium.close()
