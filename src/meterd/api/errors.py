"""Errors as RFC 9457 problem details, and the handlers that map meterd's errors to them.

Every error body is ``{"type", "title", "status", "detail"}`` with
``application/problem+json``; validation errors become 400 (not FastAPI's 422)
with one line per bad field, so a client sees exactly what to fix.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from meterd.filters import FilterError
from meterd.lifecycle import TransitionRefused
from meterd.paging import CursorError
from meterd.quantity import QuantityError
from meterd.services.catalog import CatalogError
from meterd.storage.repository import DuplicateError, NotFoundError, StaleVersionError

PROBLEM = "application/problem+json"


class ApiError(Exception):
    """An error with its HTTP status, raised by routes and dependencies."""

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
    415: "Unsupported Media Type",
    503: "Service Unavailable",
}


#: meterd's own errors, and the status each one answers with (the message is the detail).
DOMAIN_ERRORS: dict[type[Exception], int] = {
    NotFoundError: 404,
    StaleVersionError: 409,
    TransitionRefused: 409,
    DuplicateError: 409,
    CatalogError: 400,
    QuantityError: 400,
    FilterError: 400,
    CursorError: 400,
}


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def describe_validation(exc: RequestValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        lines.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(lines) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(400, describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail))

    async def _domain(_: Request, exc: Exception) -> JSONResponse:
        # By the class hierarchy, as Starlette chose the handler (subclasses included).
        status = next(DOMAIN_ERRORS[c] for c in type(exc).__mro__ if c in DOMAIN_ERRORS)
        return problem(status, str(exc))

    for error in DOMAIN_ERRORS:
        app.add_exception_handler(error, _domain)
