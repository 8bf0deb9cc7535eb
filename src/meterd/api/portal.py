"""The customer portal: ``POST /v1/portal-tokens`` mints a link, ``/portal`` is the
page it opens, ``/portal/api/*`` the read-only JSON the page reads.

A portal token (``services/portal_tokens.py``) names one customer of one org. The
JSON routes take it as ``Authorization: Bearer`` and nothing else: the customer
and org come from its verified claims, never from the request, so a link reads
one customer and no other. It is never an API key (``api/auth.py`` refuses it).
An expired or forged token is a 401 whose problem title says which ("Portal link
expired", "Portal link not valid"), so the page can say so.

The link carries the token in its fragment (``/portal#token=...``): a browser
never sends a fragment to a server, so the token stays out of access logs and
``Referer`` headers. The page (``static/portal/``) reads it with JS and calls the
JSON with it. The page's CSP allows only meterd's own scripts and styles, and
``frame-ancestors`` from ``METERD_PORTAL_FRAME_ANCESTORS`` (default ``*``): it is
meant to be framed by the provider's app.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, StrictInt

from meterd.api.auth import RuntimeDep, require
from meterd.api.docs_pages import STATIC_DIR, asset_url
from meterd.api.exact_json import ExactJSONRoute
from meterd.api.inputs import RequestBody
from meterd.api.openapi import PORTAL_SCHEME
from meterd.api.usage_history import From, To, UsageHistory, usage_history
from meterd.core.domain import CUSTOMER_ID_MAX, PRINTABLE_PATTERN
from meterd.core.quantity import format_optional_quantity, format_quantity
from meterd.core.timeutil import isoformat, isoformat_or_none, utcnow
from meterd.services.api_keys import Permission, Principal
from meterd.services.portal_tokens import (
    DEFAULT_EXPIRES_IN,
    MAX_EXPIRES_IN,
    MIN_EXPIRES_IN,
    PortalAccess,
    PortalTokenInvalid,
)
from meterd.services.portal_view import PortalEntitlement, PortalFeature
from meterd.services.usage_report import GroupBy, Window

PAGE_PATH = "/portal"
TAG = "portal"

#: The portal's own bearer scheme in the OpenAPI document (not an API key).
PORTAL_TOKEN = HTTPBearer(
    scheme_name=PORTAL_SCHEME,
    description="A customer portal token (`POST /v1/portal-tokens`), as"
    " `Authorization: Bearer <token>`: reads one customer, never the API.",
    auto_error=False,
)

minting = APIRouter(prefix="/v1", tags=[TAG], route_class=ExactJSONRoute)
reading = APIRouter(prefix="/portal/api", tags=[TAG], route_class=ExactJSONRoute)


def portal_access(
    runtime: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(PORTAL_TOKEN)],
) -> PortalAccess:
    """The customer a portal token shows; 401 (titled) without a valid one."""
    if bearer is None or not bearer.credentials.strip():
        raise PortalTokenInvalid("a portal token is required (Authorization: Bearer)")
    return runtime.portal_tokens.verify(bearer.credentials.strip(), utcnow())


Access = Annotated[PortalAccess, Depends(portal_access)]


# -- minting --------------------------------------------------------------------------


class PortalTokenIn(RequestBody):
    customer_id: str = Field(min_length=1, max_length=CUSTOMER_ID_MAX, pattern=PRINTABLE_PATTERN)
    expires_in: StrictInt = Field(
        default=DEFAULT_EXPIRES_IN,
        ge=MIN_EXPIRES_IN,
        le=MAX_EXPIRES_IN,
        description="seconds the link works: 60 up to 30 days (2592000)",
    )


class PortalTokenOut(BaseModel):
    token: str = Field(description="the portal token (a signed JWT)")
    url: str = Field(description="the portal page with the token in its fragment")
    expires_at: str


def _public_base(request: Request, public_url: str | None) -> str:
    """``METERD_PUBLIC_URL``, else the request's own base (its root path included)."""
    return (public_url or str(request.base_url)).rstrip("/")


@minting.post("/portal-tokens", status_code=201, response_model=PortalTokenOut)
def mint_portal_token(
    body: PortalTokenIn,
    request: Request,
    runtime: RuntimeDep,
    caller: Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_VIEW))],
) -> PortalTokenOut:
    """A link to a read-only page of one customer of the caller's org: its
    entitlements, balances and usage over time, until ``expires_at``. A key that
    may view every customer's entitlements may hand one customer a view of its own."""
    minted = runtime.portal_tokens.mint(caller.org, body.customer_id, utcnow(), body.expires_in)
    base = _public_base(request, runtime.settings.public_url)
    return PortalTokenOut(
        token=minted.token,
        url=f"{base}{PAGE_PATH}#token={minted.token}",
        expires_at=isoformat(minted.expires_at),
    )


# -- reading ----------------------------------------------------------------------------


class PortalEntitlementOut(BaseModel):
    entitlement_id: uuid.UUID
    billing_type: str
    quantity: str | None = Field(description="of the current period; null: unlimited")
    consumed: str
    remaining: str | None
    held: str
    overage: str
    state: str
    usable: bool
    period_start: str
    period_end: str | None
    rolled_over: str | None = Field(description="carried from the term before, if any")
    filters: dict[str, str | int | bool] | None


class PortalFeatureOut(BaseModel):
    feature: str
    name: str
    units: str
    scale: int
    has_access: bool
    state: str
    quantity: str | None = Field(description="sum over usable entitlements; null: unlimited")
    consumed: str
    remaining: str | None
    held: str
    overage: str
    entitlements: list[PortalEntitlementOut]


class PortalOverview(BaseModel):
    customer_id: str
    expires_at: str = Field(description="when this link stops working")
    features: list[PortalFeatureOut]


def _entitlement(shown: PortalEntitlement) -> PortalEntitlementOut:
    b = shown.balance
    return PortalEntitlementOut(
        entitlement_id=b.entitlement_id,
        billing_type=shown.billing_type,
        quantity=format_optional_quantity(b.quantity),
        consumed=format_quantity(b.consumed),
        remaining=format_optional_quantity(b.remaining),
        held=format_quantity(b.held),
        overage=format_quantity(b.overage),
        state=b.state.value,
        usable=b.usable,
        period_start=isoformat(b.period_start),
        period_end=isoformat_or_none(b.period_end),
        rolled_over=format_optional_quantity(shown.rolled_over),
        filters=dict(b.filters) if b.filters else None,
    )


def _feature(shown: PortalFeature) -> PortalFeatureOut:
    v = shown.value
    return PortalFeatureOut(
        feature=shown.key,
        name=shown.name,
        units=shown.units,
        scale=shown.scale,
        has_access=v.has_access,
        state=v.state,
        quantity=format_optional_quantity(v.quantity),
        consumed=format_quantity(v.consumed),
        remaining=format_optional_quantity(v.remaining),
        held=format_quantity(v.held),
        overage=format_quantity(v.overage),
        entitlements=[_entitlement(e) for e in shown.entitlements],
    )


#: A customer's figures are for that customer's browser alone: no shared cache keeps them.
PRIVATE = "no-store"


@reading.get("/overview", response_model=PortalOverview)
def overview(runtime: RuntimeDep, access: Access, response: Response) -> PortalOverview:
    """The token's customer: each feature with its real-time value (as
    ``GET /v1/customers/{customer_id}/features/{feature}``) and each entitlement's
    balance and current period."""
    response.headers["Cache-Control"] = PRIVATE
    features = runtime.portal_view.overview(access.org, access.customer_id, utcnow())
    return PortalOverview(
        customer_id=access.customer_id,
        expires_at=isoformat(access.expires_at),
        features=[_feature(f) for f in features],
    )


@reading.get("/usage", response_model=UsageHistory, response_model_exclude_none=True)
def usage(
    runtime: RuntimeDep,
    access: Access,
    response: Response,
    start: From,
    end: To,
    window: Annotated[Window, Query(description="HOUR, DAY or MONTH of the local calendar")] = (
        Window.DAY
    ),
    tz: Annotated[str, Query(max_length=64, description="IANA time zone, e.g. Europe/Paris")] = (
        "UTC"
    ),
    group_by: Annotated[
        str, Query(pattern="^(feature|entitlement)$", description="feature or entitlement")
    ] = "entitlement",
) -> UsageHistory:
    """The token's customer's usage per window, grouped by feature or by entitlement:
    ``GET /v1/usage`` with the customer fixed by the token (same bounds)."""
    response.headers["Cache-Control"] = PRIVATE
    return usage_history(
        runtime,
        access.org,
        customer=access.customer_id,
        feature=None,
        start=start,
        end=end,
        window=window,
        tz=tz,
        group_by=[GroupBy(group_by)],
    )


# -- the page ------------------------------------------------------------------------------

_ASSETS = (
    "ui/meterd.css",
    "chart/uPlot-1.6.32.min.css",
    "portal/portal.css",
    "chart/uPlot-1.6.32.iife.min.js",
    "chart/meterd-chart.js",
    "portal/portal.js",
)


def _version(name: str) -> str:
    """A digest of the asset: its URL changes when the file does (they are cached)."""
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


_VERSIONS = {name: _version(name) for name in _ASSETS}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Your usage</title>
{styles}
</head>
<body>
<main id="portal" aria-live="polite" data-api="{api}">
<p class="meterd-muted" id="portal-loading">Loading your usage&hellip;</p>
</main>
<noscript><p>This page needs JavaScript to show your usage.</p></noscript>
{scripts}
</body>
</html>
"""


def page_csp(frame_ancestors: str) -> str:
    """Only meterd's own files; no inline script or style; framed by whoever
    ``METERD_PORTAL_FRAME_ANCESTORS`` names."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none';"
        f" frame-ancestors {frame_ancestors}"
    )


def _page(request: Request) -> HTMLResponse:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    urls = {name: asset_url(root, name, version) for name, version in _VERSIONS.items()}
    styles = "\n".join(
        f'<link rel="stylesheet" href="{url}">' for n, url in urls.items() if n.endswith(".css")
    )
    scripts = "\n".join(
        f'<script src="{url}" defer></script>' for name, url in urls.items() if name.endswith(".js")
    )
    html = _PAGE.format(styles=styles, scripts=scripts, api=f"{root}/portal/api")
    runtime = request.app.state.runtime_factory()
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": page_csp(runtime.settings.portal_frame_ancestors),
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def portal_page(request: Request) -> HTMLResponse:
    return _page(request)


def install(app: FastAPI) -> None:
    """Add the page (a plain route, as ``/docs``: no schema) and both routers."""
    app.add_route(PAGE_PATH, portal_page, include_in_schema=False)
    app.include_router(minting)
    app.include_router(reading)
