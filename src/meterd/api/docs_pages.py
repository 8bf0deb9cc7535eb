"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served whole by meterd.

FastAPI's own pages load their scripts and styles from a CDN (and ReDoc its fonts
from Google Fonts): without internet they are blank. These pages are FastAPI's,
pointed at copies shipped in the package (``static/``, see its README for the
versions, sources and licences) and mounted at ``/static``. Like FastAPI's, the
pages, the assets and ``/openapi.json`` are public: the document describes the
API, it holds no data; Swagger's "Authorize" sends the key on each call it makes.

The asset URLs carry the vendored version (``?v=``), so a browser may keep them a
week (``Cache-Control``) and still fetches the new files after an upgrade.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

#: The versions of the vendored files (``static/README.md``); they version the URLs.
SWAGGER_UI_VERSION = "5.36.0"
REDOC_VERSION = "2.5.4"

STATIC_PATH = "/static"
STATIC_DIR = Path(__file__).parent / "static"
CACHE_CONTROL = "public, max-age=604800"

#: What the pages may load: from meterd alone. The browser enforces it, so a
#: request a vendored bundle makes on its own (ReDoc 2.5.4 draws the Redocly logo
#: from cdn.redoc.ly) never leaves the browser. Inline script and styles are what
#: FastAPI's page and both UIs use; workers and images may come from blob:/data:.
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:;"
    " connect-src 'self'; frame-ancestors 'self'"
)

#: Swagger UI settings beside FastAPI's defaults: no online validator (it would send
#: the document to another host).
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


class CachedStaticFiles(StaticFiles):
    """Starlette's static files (ETag, Last-Modified, 304) with a ``Cache-Control``."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = CACHE_CONTROL
        return response


def asset_url(root_path: str, name: str, version: str) -> str:
    """The URL of the vendored file ``name`` (under ``static/``), behind ``root_path``."""
    return f"{root_path}{STATIC_PATH}/{name}?v={version}"


def _root_path(request: Request) -> str:
    root_path: str = request.scope.get("root_path", "")
    return root_path.rstrip("/")


def install(app: FastAPI) -> None:
    """Mount the assets and add ``/docs`` and ``/redoc`` (build the app with
    ``docs_url=None, redoc_url=None`` so FastAPI adds none of its own)."""
    app.mount(STATIC_PATH, CachedStaticFiles(directory=STATIC_DIR), name="static")
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return _confined(
            get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=asset_url(
                    root, "swagger-ui/swagger-ui-bundle.js", SWAGGER_UI_VERSION
                ),
                swagger_css_url=asset_url(root, "swagger-ui/swagger-ui.css", SWAGGER_UI_VERSION),
                swagger_favicon_url=asset_url(
                    root, "swagger-ui/favicon-32x32.png", SWAGGER_UI_VERSION
                ),
                swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
            )
        )

    async def redoc(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return _confined(
            get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=asset_url(root, "redoc/redoc.standalone.js", REDOC_VERSION),
                redoc_favicon_url=asset_url(
                    root, "swagger-ui/favicon-32x32.png", SWAGGER_UI_VERSION
                ),
                with_google_fonts=False,
            )
        )

    # plain routes, as FastAPI adds its own pages: no body, no dependencies, no schema
    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)


def _confined(page: HTMLResponse) -> HTMLResponse:
    """``page`` with ``PAGE_CSP``: it loads nothing from another host."""
    page.headers["Content-Security-Policy"] = PAGE_CSP
    return page
