"""Authentication and permissions: every route names the permission it needs.

A key is taken from ``x-api-key``, or ``Authorization: Bearer <key>``, or (only
where a route allows it, for clients that cannot set headers) the
``access_token`` query parameter. The key's org is the caller's org: routes
read and write nothing else, whatever ids a request carries.

Every authenticated request then takes a token from its key's bucket (before the
permission check: a key hammering a route it may not call is load all the same);
an empty bucket is 429 with ``Retry-After``. An expired key is 401 saying so, and
so is a customer portal token (``services/portal_tokens.py``): it is never API access.

Authentication costs no worker thread when it can: every dependency here is
``async`` and answers from this process's cache of verified keys
(``ApiKeyService.cached``: no I/O) on the event loop; only a key the cache does
not vouch for (unknown here, older than ``CACHE_SECONDS``, or a last use due to
be written) and the rate limiter's Redis call take a thread. The hot routes
(value, reserve, settle) take ``require_admitted_in_route``: they take their one
thread for their own work (``in_worker``) and call ``Caller.admit`` there first,
so a request to them costs one thread hop, not one per dependency; the value route sends the
limiter's take and its last Redis read together (``Caller.admit_with``).

The two headers are read through FastAPI's security classes (``API_KEY``,
``BEARER``, neither raising by itself), so the OpenAPI document declares them as
security schemes and lists them on every operation that needs a key: Swagger UI
shows "Authorize" and sends the key. ``_token`` alone decides what is missing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
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


async def runtime_of(request: Request) -> Runtime:
    """The runtime (``async``: it does no I/O, so it takes no worker thread)."""
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


def _refuse_portal_token(token: str) -> None:
    if looks_like_a_jwt(token):
        raise HttpError(
            401,
            "a portal token is not an API key: it opens the customer portal (/portal) only",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _expired(exc: ApiKeyExpired) -> HttpError:
    return HttpError(401, str(exc), headers={"WWW-Authenticate": "Bearer"})


def _identify(runtime: Runtime, token: str) -> Principal:
    """The key's principal, asking the database when the cache does not vouch for it
    (blocking: in a worker thread). 401 for anything but a valid key."""
    _refuse_portal_token(token)
    try:
        principal = _authenticate(runtime, token)
    except ApiKeyExpired as exc:
        raise _expired(exc) from None
    if principal is None:
        raise HttpError(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    return principal


def _cached(runtime: Runtime, token: str) -> Principal | None:
    """The key's principal from this process's cache, with no I/O (for the event
    loop); None: ``_identify`` must ask."""
    _refuse_portal_token(token)
    try:
        return runtime.api_keys.cached(token)
    except ApiKeyExpired as exc:
        raise _expired(exc) from None


def _rate_limited(exc: RateLimited) -> HttpError:
    return HttpError(429, str(exc), headers={"Retry-After": str(exc.retry_after)})


def _permitted(principal: Principal, permission: Permission) -> None:
    if not principal.may(permission):
        raise HttpError(403, f"the API key lacks the {permission.value} permission")


def _admit(runtime: Runtime, principal: Principal, permission: Permission) -> None:
    """A token from the key's bucket (Redis: blocking), then the permission: 429
    before 403, so a key hammering a route it may not call is limited all the same."""
    try:
        runtime.rate_limiter.check(principal)
    except RateLimited as exc:
        raise _rate_limited(exc) from None
    _permitted(principal, permission)


def _principal(runtime: Runtime, token: str, permission: Permission) -> Principal:
    principal = _identify(runtime, token)
    _admit(runtime, principal, permission)
    return principal


async def _principal_async(runtime: Runtime, token: str, permission: Permission) -> Principal:
    """``_principal`` taking a worker thread only for what blocks: the database (a
    key the cache does not vouch for) and the limiter's Redis call."""
    principal = _cached(runtime, token)
    if principal is None:
        return await run_in_threadpool(_principal, runtime, token, permission)
    if principal.rate_limit is None:
        _permitted(principal, permission)
    else:
        await run_in_threadpool(_admit, runtime, principal, permission)
    return principal


T = TypeVar("T")

#: Worker threads of the hot routes' one hop (``in_worker``): as many as anyio's
#: default pool (``run_in_threadpool``) holds.
HOT_THREADS = 40
_hot_pool = concurrent.futures.ThreadPoolExecutor(HOT_THREADS, thread_name_prefix="meterd-hot")


async def in_worker(work: Callable[[], T]) -> T:
    """``work()`` in a worker thread of the hot routes' own pool, in a copy of the
    caller's context (as ``run_in_threadpool``): asyncio's executor hop, without
    anyio's capacity limiter and cancel scope around it (about a third of the hop's
    cost on the event loop). Cancelled (the client went away), the thread finishes
    the work all the same and its answer is dropped."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_hot_pool, context.run, work)


class Caller:
    """An authenticated caller not yet admitted (a ``balance.Gate``): the rate limit
    and the permission are checked by ``admit`` or ``admit_with``, which the hot
    routes call in their worker thread; ``admitted`` says whether one has run."""

    __slots__ = ("admitted", "permission", "principal", "runtime")

    def __init__(self, principal: Principal, permission: Permission, runtime: Runtime) -> None:
        self.principal = principal
        self.permission = permission
        self.runtime = runtime
        self.admitted = False

    @property
    def org(self) -> str:
        return self.principal.org

    def admit(self) -> Principal:
        """Take a token from the key's bucket (429), then check the permission (403)."""
        self.admitted = True
        _admit(self.runtime, self.principal, self.permission)
        return self.principal

    def admit_with(
        self, client: object, command: Callable[[Any], None], reply: Callable[[Any], T]
    ) -> T:
        """``admit``, with a Redis command to ``client`` sent in the same round trip
        (``RateLimiter.check_pipelined``): ``command(pipeline)`` queues it, and the
        answer is ``reply`` of its reply. A request over the limit or without the
        permission is refused as by ``admit``, its reply unread."""
        self.admitted = True
        try:
            result = self.runtime.rate_limiter.check_pipelined(
                self.principal, client, command, reply
            )
        except RateLimited as exc:
            raise _rate_limited(exc) from None
        _permitted(self.principal, self.permission)
        return result

    def ensure_admitted(self) -> None:
        """``admit`` unless done: a route calls it before it answers."""
        if not self.admitted:
            self.admit()


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must hold ``permission`` (headers only)."""

    async def dependency(
        runtime: RuntimeDep,
        x_api_key: ApiKeyDep,
        bearer: BearerDep,
    ) -> Principal:
        return await _principal_async(runtime, _token(x_api_key, bearer, None), permission)

    return dependency


def require_admitted_in_route(permission: Permission) -> Callable[..., Awaitable[Caller]]:
    """A dependency for the hot routes: the caller, authenticated (401 here) but not
    yet admitted: the route calls ``Caller.admit`` (or ``admit_with``) first in the
    worker thread it takes for its own work (429, then 403, as ``require``; but
    FastAPI validates the path and body before the route runs, so there an invalid
    request is 422 before it is 429 or 403). Headers only. It reads them with
    ``API_KEY`` and ``BEARER`` itself rather than through sub-dependencies (each
    costs FastAPI's solving on every request), so a route taking it declares their
    security in the OpenAPI document by hand: ``openapi_extra=KEY_SECURITY``."""

    async def dependency(request: Request) -> Caller:
        runtime = await runtime_of(request)
        token = _token(await API_KEY(request), await BEARER(request), None)
        principal = _cached(runtime, token)
        if principal is None:
            principal = await run_in_threadpool(_identify, runtime, token)
        return Caller(principal, permission, runtime)

    return dependency


#: The OpenAPI security of a route taking ``require_admitted_in_route``: the same as
#: that of a route taking ``require`` (whose ``Security`` dependencies declare it).
KEY_SECURITY: dict[str, Any] = {"security": [{API_KEY.scheme_name: []}, {BEARER.scheme_name: []}]}


def require_allowing_query_token(
    permission: Permission,
) -> Callable[..., Awaitable[Principal]]:
    """Like ``require``, also accepting ``?access_token=`` (the workspace seed API)."""

    async def dependency(
        runtime: RuntimeDep,
        x_api_key: ApiKeyDep,
        bearer: BearerDep,
        access_token: Annotated[str | None, Query()] = None,
    ) -> Principal:
        token = _token(x_api_key, bearer, access_token)
        return await _principal_async(runtime, token, permission)

    return dependency


def require_unless_flag(
    flag: str, plain: Permission, flagged: Permission
) -> Callable[..., Awaitable[tuple[Principal, bool]]]:
    """A dependency for a route with a boolean query parameter ``flag`` that changes
    what it does (``POST /v1/events?backfill=true``): the caller must hold
    ``flagged`` when it is set, else ``plain``. Returns (caller, flag)."""

    async def dependency(
        request: Request,
        runtime: RuntimeDep,
        x_api_key: ApiKeyDep,
        bearer: BearerDep,
    ) -> tuple[Principal, bool]:
        raw = request.query_params.get(flag, "false").strip().lower()
        if raw not in _TRUE and raw not in _FALSE:
            raise HttpError(400, f"the query parameter {flag!r} must be true or false")
        permission = flagged if raw in _TRUE else plain
        token = _token(x_api_key, bearer, None)
        principal = await _principal_async(runtime, token, permission)
        return principal, raw in _TRUE

    return dependency


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
