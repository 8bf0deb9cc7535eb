"""``/console``: the operator console, a small client-side page (``static/console/``).

The page holds no data and no secret: it is the same for everyone, and the script
it loads asks the /v1 API for everything with the API key the operator signs in
with (kept in the tab's sessionStorage). So the key's permissions decide what the
console shows and may do: a section whose route answers 403 says which permission
the key lacks. There is no session, cookie or console-only route.

The page is served with a Content-Security-Policy of 'self' and no inline script
or style: it loads nothing from another host and runs only meterd's files. It may
not be framed (an operator's page that acts on one click). Its assets' URLs carry
a digest of their content (``?v=``), so a week's cache never serves stale code.
"""

from __future__ import annotations

import functools
import hashlib
import html

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from meterd.api.docs_pages import STATIC_DIR, asset_url

CONSOLE_DIR = STATIC_DIR / "console"
#: The files the page loads, under ``static/``; their digest versions the URLs.
ASSETS = (
    "ui/meterd.css",
    "chart/uPlot-1.6.32.min.css",
    "console/console.css",
    "chart/uPlot-1.6.32.iife.min.js",
    "chart/meterd-chart.js",
    "console/console.js",
)
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)


@functools.cache
def assets_version() -> str:
    digest = hashlib.sha256()
    for name in ASSETS:
        digest.update((STATIC_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


@functools.cache
def _template() -> str:
    return (CONSOLE_DIR / "console.html").read_text(encoding="utf-8")


def render(root_path: str) -> str:
    """The page, its asset URLs behind ``root_path`` (a proxy's prefix)."""
    page = _template()
    version = assets_version()
    for name in ASSETS:
        page = page.replace("{{" + name + "}}", html.escape(asset_url(root_path, name, version)))
    return page.replace("{{root}}", html.escape(root_path))


def install(app: FastAPI) -> None:
    """Add ``/console``: a plain route, as ``/docs`` (no body, no dependency, no schema)."""
    app.add_route("/console", console, include_in_schema=False)


async def console(request: Request) -> HTMLResponse:
    root_path = str(request.scope.get("root_path", "")).rstrip("/")
    return HTMLResponse(
        render(root_path),
        headers={
            "Content-Security-Policy": CONSOLE_CSP,
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )
