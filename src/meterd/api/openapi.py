"""The OpenAPI document, made to say what the API does.

* Some routes read their query string themselves: the Zenskar-style filters
  (``meterd.core.filters``) and the workspace seed page's case-insensitive names.
  FastAPI cannot see those parameters, so routes declare them with
  ``openapi_extra`` from the lists built here (``filter_parameters``), from the
  same tables they parse with. The declarations document the parameters and
  give schemathesis something to fuzz; parsing is unchanged.
* The API answers a bad request with 400 (problem details), never FastAPI's
  422: ``finish`` removes 422 from every operation and declares 400 on every
  operation that takes a path or query parameter or a body (a route may
  declare its own 400, as the workspace page does for its envelope).
* Every operation that takes a key lists the security schemes of ``auth``
  (``x-api-key`` or ``Authorization: Bearer``; FastAPI writes them from the auth
  dependency), and ``finish`` declares on it the answers that dependency gives
  before the route runs: 401 (no key, or not valid), 403 (a permission it lacks)
  and 429 (the key's rate limit, with ``Retry-After``). A route may declare its
  own (the workspace page's 403). The customer portal's operations take a portal
  token instead (``PortalToken``), and declare only its 401.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from meterd.api.errors import PROBLEM
from meterd.core.domain import PRINTABLE_PATTERN
from meterd.core.filters import (
    DATETIME_RANGE,
    INT64_MAX,
    INT64_MIN,
    MAX_IN,
    MAX_QUANTITY,
    ORDERED,
    Kind,
    Op,
)

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what is wrong, naming the parameter"},
    },
    "required": ["type", "title", "status", "detail"],
}
_PROBLEM_CONTENT: dict[str, Any] = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
BAD_REQUEST: dict[str, Any] = {
    "description": "a bad parameter, body, filter, sort key or cursor (the detail names it)",
    "content": _PROBLEM_CONTENT,
}
#: What the auth dependency answers before the route runs (``meterd.api.auth``).
KEY_ANSWERS: dict[str, dict[str, Any]] = {
    "401": {
        "description": "no API key, or one that is not valid or has expired",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string", "enum": ["Bearer"]}}},
        "content": _PROBLEM_CONTENT,
    },
    "403": {
        "description": "the API key lacks the permission this operation needs",
        "content": _PROBLEM_CONTENT,
    },
    "429": {
        "description": "the API key is over its rate limit",
        "headers": {
            "Retry-After": {
                "description": "seconds to wait before the next request",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
        "content": _PROBLEM_CONTENT,
    },
}

#: The customer portal's routes take a portal token, not a key (``meterd.api.portal``):
#: no permission, no key's rate limit; only the token can be refused.
PORTAL_SCHEME = "PortalToken"
PORTAL_TOKEN_ANSWER: dict[str, Any] = {
    "description": "no portal token, or one that has expired (title: Portal link expired)"
    " or is not valid (title: Portal link not valid)",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string", "enum": ["Bearer"]}}},
    "content": _PROBLEM_CONTENT,
}


def value_schema(kind: Kind) -> dict[str, Any]:
    """The schema of one filter value of ``kind``, with the bounds the parser enforces."""
    if kind is Kind.UUID:
        return {"type": "string", "format": "uuid"}
    if kind is Kind.DATETIME:
        return {
            "type": "string",
            "format": "date-time",
            "description": f"ISO 8601; in UTC between {DATETIME_RANGE}",
        }
    if kind is Kind.DECIMAL:
        return {
            "type": "number",
            "minimum": -float(MAX_QUANTITY),
            "maximum": float(MAX_QUANTITY),
            "description": f"exact, at most 6 fractional digits, at most {MAX_QUANTITY}",
        }
    if kind is Kind.INTEGER:
        return {"type": "integer", "format": "int64", "minimum": INT64_MIN, "maximum": INT64_MAX}
    return {"type": "string", "maxLength": 200, "pattern": PRINTABLE_PATTERN}


def operators(kind: Kind) -> list[Op]:
    """The operators a field of ``kind`` takes (ordering only for ordered kinds)."""
    return [op for op in Op if kind in ORDERED or op not in (Op.GT, Op.GTE, Op.LT, Op.LTE)]


def _filter_parameter(field: str, kind: Kind, op: Op) -> dict[str, Any]:
    name = field if op is Op.EQ else f"{field}__{op.value}"
    schema: dict[str, Any]
    if op is Op.ISNULL:
        schema, description = {"type": "boolean"}, f"{field} is (true) or is not (false) set"
    elif op is Op.IN:
        schema = {"type": "string", "minLength": 1}
        description = f"{field} is one of these 1 to {MAX_IN} comma-separated {kind.value}s"
    else:
        schema = value_schema(kind)
        description = f"{field} {_WORDS[op]} this value"
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


_WORDS = {
    Op.EQ: "=",
    Op.NEQ: "!= (or is unset)",
    Op.GT: ">",
    Op.GTE: ">=",
    Op.LT: "<",
    Op.LTE: "<=",
}


def filter_parameters(fields: Mapping[str, Kind]) -> list[dict[str, Any]]:
    """Every query parameter ``meterd.core.filters.parse_filters`` accepts for ``fields``:
    each field bare (equality) and with each operator its kind takes."""
    return [
        _filter_parameter(field, kind, op)
        for field, kind in fields.items()
        for op in operators(kind)
    ]


def finish(schema: dict[str, Any]) -> dict[str, Any]:
    """400 instead of 422 everywhere, the answers of the auth dependency on every
    operation that takes a key, problem details declared once."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            parameters = operation.get("parameters", [])
            takes_input = operation.get("requestBody") or any(
                p.get("in") != "header" for p in parameters
            )
            if takes_input and "400" not in responses:
                responses["400"] = BAD_REQUEST
            security = operation.get("security")
            if security == [{PORTAL_SCHEME: []}]:
                responses.setdefault("401", PORTAL_TOKEN_ANSWER)
            elif security:
                for status, answer in KEY_ANSWERS.items():
                    responses.setdefault(status, answer)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    return schema


class MeterdAPI(FastAPI):
    """FastAPI, with the OpenAPI document finished by ``finish``."""

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            self.openapi_schema = finish(super().openapi())
        return self.openapi_schema
