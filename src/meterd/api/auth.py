"""Authentication and permissions: every route names the permission it needs.

A key is taken from ``x-api-key``, or ``Authorization: Bearer <key>``, or (only
where a route allows it, for clients that cannot set headers) the
``access_token`` query parameter. The key's org is the caller's org: routes
read and write nothing else, whatever ids a request carries.

Every authenticated request then takes a token from its key's bucket (before the
permission check: a key hammering a route it may not call is load all the same);
an empty bucket is 429 with ``Retry-After``. An expired key is 401 saying so, and
so is a customer portal token (``services/portal_tokens.py``): it is never API access.

The two headers are read through FastAPI's security classes (``API_KEY``,
``BEARER``, neither raising by itself), so the OpenAPI document declares them as
security schemes and lists them on every operation that needs a key: Swagger UI
shows "Authorize" and sends the key. ``_token`` alone decides what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from meterd.api.errors import HttpError
from meterd.core.errors import UnavailableError
from meterd.runtime import STORE_ERRORS, Runtime
from meterd.services.api_keys import (
    ApiKeyExpired,
    KeyCheckUnavailable,
    Permission,
    Principal,
    RateLimited,
)
from meterd.services.portal_tokens import looks_like_a_jwt


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime_factory()
    return runtime


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]

#: The security schemes of the OpenAPI document (their names are its keys).
API_KEY = APIKeyHeader(
    name="x-api-key",
    scheme_name="ApiKey",
    description="An API key (`meterd keys create`), in the x-api-key header.",
    auto_error=False,
)
BEARER = HTTPBearer(
    scheme_name="Bearer",
    description="The same API key, as `Authorization: Bearer <key>`.",
    auto_error=False,
)
#: The header ``x-api-key``, or None when absent or empty.
ApiKeyDep = Annotated[str | None, Security(API_KEY)]
#: ``Authorization: Bearer <credentials>``, or None when absent, empty or another scheme.
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def _token(
    x_api_key: str | None,
    bearer: HTTPAuthorizationCredentials | None,
    access_token: str | None,
) -> str:
    if x_api_key:
        return x_api_key.strip()
    if bearer and bearer.credentials.strip():
        return bearer.credentials.strip()
    if access_token:
        return access_token.strip()
    raise HttpError(
        401,
        "an API key is required (x-api-key or Authorization: Bearer)",
        headers={"WWW-Authenticate": "Bearer"},
    )


#: What the key store raises when the database does not answer.
_KEY_STORE_DOWN: tuple[type[Exception], ...] = (UnavailableError, *STORE_ERRORS)


def _authenticate(runtime: Runtime, token: str) -> Principal | None:
    """The key's principal; with the database down, a key verified in the last few
    minutes is still accepted (value and reserve keep answering from Redis), and any
    other key is 503, not 401: it may be valid."""
    try:
        return runtime.api_keys.authenticate(token)
    except _KEY_STORE_DOWN as exc:
        principal = runtime.api_keys.remembered(token)
        if principal is None:
            raise KeyCheckUnavailable(
                "the API key cannot be checked now: the database did not answer; try again"
            ) from exc
        return principal


def _principal(runtime: Runtime, token: str, permission: Permission) -> Principal:
    if looks_like_a_jwt(token):
        raise HttpError(
            401,
            "a portal token is not an API key: it opens the customer portal (/portal) only",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        principal = _authenticate(runtime, token)
    except ApiKeyExpired as exc:
        raise HttpError(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    if principal is None:
        raise HttpError(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    try:
        runtime.rate_limiter.check(principal)
    except RateLimited as exc:
        raise HttpError(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    if not principal.may(permission):
        raise HttpError(403, f"the API key lacks the {permission.value} permission")
    return principal


def require(permission: Permission) -> Callable[..., Principal]:
    """A dependency: the caller, who must hold ``permission`` (headers only)."""

    def dependency(
        runtime: RuntimeDep,
        x_api_key: ApiKeyDep,
        bearer: BearerDep,
    ) -> Principal:
        return _principal(runtime, _token(x_api_key, bearer, None), permission)

    return dependency


def require_allowing_query_token(permission: Permission) -> Callable[..., Principal]:
    """Like ``require``, also accepting ``?access_token=`` (the workspace seed API)."""

    def dependency(
        runtime: RuntimeDep,
        x_api_key: ApiKeyDep,
        bearer: BearerDep,
        access_token: Annotated[str | None, Query()] = None,
    ) -> Principal:
        return _principal(runtime, _token(x_api_key, bearer, access_token), permission)

    return dependency


def require_unless_flag(
    flag: str, plain: Permission, flagged: Permission
) -> Callable[..., tuple[Principal, bool]]:
    """A dependency for a route with a boolean query parameter ``flag`` that changes
    what it does (``POST /v1/events?backfill=true``): the caller must hold
    ``flagged`` when it is set, else ``plain``. Returns (caller, flag)."""

    def dependency(
        request: Request,
        runtime: RuntimeDep,
        x_api_key: ApiKeyDep,
        bearer: BearerDep,
    ) -> tuple[Principal, bool]:
        raw = request.query_params.get(flag, "false").strip().lower()
        if raw not in _TRUE and raw not in _FALSE:
            raise HttpError(400, f"the query parameter {flag!r} must be true or false")
        permission = flagged if raw in _TRUE else plain
        principal = _principal(runtime, _token(x_api_key, bearer, None), permission)
        return principal, raw in _TRUE

    return dependency


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
