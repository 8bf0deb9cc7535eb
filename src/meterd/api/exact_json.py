"""JSON that carries decimals exactly, both ways.

FastAPI would turn a Decimal into a float (0.1 + 0.2 problems, and digits lost
past 15). The seed APIs want numbers, so those are written with simplejson's
exact Decimal support; the native API writes quantities as decimal strings.
Every request body is read with ``loads_exact``: each non-integer number keeps
its literal text (``quantity.JsonNumber``), and ``NaN``/``Infinity``, which
Python's decoder takes but JSON does not have, are refused. ``POST /v1/events``
calls it itself; the routes with a body model get it through ``ExactJSONRoute``,
so a quantity sent as the JSON number ``0.1`` is read as the text ``0.1``,
never through the float it would otherwise become first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import simplejson
from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from meterd.core.errors import InvalidError
from meterd.core.quantity import JsonNumber


def _no_constant(name: str) -> Any:
    raise InvalidError(f"the body is not JSON: {name} is not a JSON value")


def loads_exact(body: bytes) -> Any:
    """Decode a request body (UTF-8 JSON). Raises ``InvalidError`` with what is wrong.
    Nesting is bounded before this runs (``body_limit``); RecursionError is caught
    all the same."""
    try:
        return json.loads(body, parse_float=JsonNumber.from_literal, parse_constant=_no_constant)
    except InvalidError:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidError(f"the body is not JSON: {exc.msg} at character {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # an integer of over 4,300 digits, say
        raise InvalidError(f"the body is not JSON: {str(exc)[:200]}") from None


class ExactJSONRequest(Request):
    """A request whose JSON body is decoded by ``loads_exact``. A body that is not
    JSON is a 400 saying why (FastAPI would answer any other exception from
    ``json()`` with a bare "There was an error parsing the body")."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = loads_exact(await self.body())
            except InvalidError as exc:
                raise HTTPException(400, str(exc)) from None
        return self._json


class ExactJSONRoute(APIRoute):
    """A route that reads its body model from ``loads_exact``'s decoding: every
    router of the API uses it (``route_class``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_handler(request: Request) -> Response:
            return await handler(ExactJSONRequest(request.scope, request.receive))

        return exact_handler


class ExactJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return simplejson.dumps(
            content, use_decimal=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")


def exact_number(value: Decimal | None) -> int | Decimal | None:
    """A quantity as an exact JSON number: an int when whole, else the decimal."""
    if value is None:
        return None
    normal = value.normalize()
    return int(normal) if normal == normal.to_integral_value() else normal


def model_response(model: BaseModel) -> Response:
    """``model`` as its route's ``response_model`` would answer it (200, the same
    JSON bytes: pydantic's serializer, by field name, nothing left out), without
    FastAPI validating it again first: for the hot routes, whose models are built
    from typed values (``model_construct``: not validated either)."""
    return Response(
        type(model).__pydantic_serializer__.to_json(model), media_type="application/json"
    )
