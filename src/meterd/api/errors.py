"""Errors as RFC 9457 problem details, and the one table that maps meterd's errors
to HTTP statuses.

Every error body is ``{"type", "title", "status", "detail"}`` with
``application/problem+json``; validation errors become 400 (not FastAPI's 422)
with one line per bad field, so a client sees exactly what to fix. meterd's own
errors are answered by their kind (``meterd.core.errors``), never by their class:
a new error class needs no change here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from meterd.core.errors import (
    ConflictError,
    InvalidError,
    MeterdError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    UnavailableError,
)
from meterd.runtime import STORE_ERRORS

PROBLEM = "application/problem+json"


class HttpError(MeterdError):
    """An answer of the HTTP edge itself, with its status (401, 403, 415, ...):
    about the request as HTTP, not about meterd's data."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    503: "Service Unavailable",
}

#: The status of each kind of meterd error (the message is the detail).
KIND_STATUS: dict[type[MeterdError], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    InvalidError: 400,
    UnavailableError: 503,
    UnauthorizedError: 401,
    RateLimitedError: 429,
}


def status_of(error: MeterdError) -> int:
    """The HTTP status of one of meterd's errors (500 only for a class of no kind)."""
    if isinstance(error, HttpError):
        return error.status
    return next((s for kind, s in KIND_STATUS.items() if isinstance(error, kind)), 500)


def problem(
    status: int, detail: str, headers: dict[str, str] | None = None, *, title: str | None = None
) -> JSONResponse:
    """A problem body; ``title`` overrides the status's own (an error class may name a
    clearer one in its ``title`` attribute: "Portal link expired")."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def unavailable(detail: str, retry_after: int = UnavailableError.retry_after) -> JSONResponse:
    return problem(503, detail, {"Retry-After": str(retry_after)})


def describe_validation(exc: RequestValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        if error.get("type") == "extra_forbidden":
            lines.append(f"{where}: unknown field (check its spelling; nothing was changed)")
        else:
            lines.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(lines) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(MeterdError)
    async def _meterd(_: Request, exc: MeterdError) -> JSONResponse:
        if isinstance(exc, HttpError):
            return problem(exc.status, exc.detail, exc.headers)
        if isinstance(exc, UnavailableError):
            return unavailable(str(exc), exc.retry_after)
        if isinstance(exc, UnauthorizedError):
            title = getattr(exc, "title", None)
            return problem(401, str(exc), {"WWW-Authenticate": "Bearer"}, title=title)
        if isinstance(exc, RateLimitedError):
            return problem(429, str(exc), {"Retry-After": str(exc.retry_after)})
        return problem(status_of(exc), str(exc))

    async def _store_down(_: Request, exc: Exception) -> JSONResponse:
        # A driver error no store wrapped: the store did not answer, try again.
        return unavailable(f"a store did not answer ({type(exc).__name__}); try again")

    for error in STORE_ERRORS:
        app.add_exception_handler(error, _store_down)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(400, describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail))
