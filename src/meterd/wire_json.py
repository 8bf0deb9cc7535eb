"""JSON on the broker as meterd's own processes read and write it: numbers as sent.

kombu's JSON codec turns a message body's objects ``{"__type__": ...,
"__value__": ...}`` into Python objects (a tag it cannot revive fails the whole
message) and writes every non-integer number as the float's ``repr``: a
quantity ``0.00001``, read exactly (``quantity.JsonNumber`` keeps the literal),
went out again as ``1e-05``, which the next read refuses (an exponent), so a
batch counted on its first try was dead-lettered on a retry, and an event the
API took (202) was refused by the worker.

* ``plain_loads``: JSON as sent; objects stay dicts, non-integer numbers are
  ``JsonNumber`` (their literal kept), ``NaN``/``Infinity`` are kept as text so
  only the value carrying them is refused;
* ``exact_dumps``: each ``JsonNumber`` written as its literal and a ``Decimal``
  as its exact digits (JSON numbers), anything else as kombu writes it;
* ``install_json_codec``: make them kombu's ``json`` codec in this process (and
  the processes it forks). meterd's worker decodes with ``plain_loads``;
  meterd's API and CLI only publish, and keep kombu's decoder. Never installed
  by the client library a producer imports into its own application.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import simplejson
from kombu import serialization
from kombu.utils.json import JSONEncoder as KombuJSONEncoder
from kombu.utils.json import loads as kombu_loads

from meterd.core.errors import InvalidError
from meterd.core.quantity import JsonNumber

_KOMBU = KombuJSONEncoder()


class UnreadableJson(InvalidError):
    """A body that is not JSON: not UTF-8, not JSON syntax, or nested too deep."""


def _constant(name: str) -> str:
    """``NaN`` and ``Infinity`` are not JSON: kept as their text, so the one
    event carrying them is refused for its value, not the message for its syntax."""
    return name


def plain_loads(data: bytes | str) -> Any:
    """JSON as sent: objects stay dicts (no kombu type revival) and non-integer
    numbers keep their literal text (``quantity.JsonNumber``), as the HTTP API
    reads them."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        return json.loads(text, parse_float=JsonNumber.from_literal, parse_constant=_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise UnreadableJson(str(exc)[:300]) from None


class _Literal(Decimal):
    """A number written as the literal it was read from (simplejson writes a
    ``Decimal`` as ``str``)."""

    text: str

    def __new__(cls, text: str) -> _Literal:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text


def _exact(value: Any) -> Any:
    if isinstance(value, JsonNumber):
        return _Literal(value.text)
    if isinstance(value, dict):
        return {key: _exact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_exact(item) for item in value]
    return value


def exact_dumps(value: Any) -> str:
    """JSON of ``value`` with every number exact: a ``JsonNumber`` as its literal,
    a ``Decimal`` as its digits; other objects as kombu encodes them."""
    return simplejson.dumps(_exact(value), use_decimal=True, default=_KOMBU.default)


def install_json_codec(*, plain_decoding: bool) -> None:
    """kombu's ``json`` codec in this process: ``exact_dumps`` to write, and
    ``plain_loads`` (the worker) or kombu's own decoder (a publisher) to read."""
    serialization.register(
        "json",
        exact_dumps,
        plain_loads if plain_decoding else kombu_loads,
        content_type="application/json",
        content_encoding="utf-8",
    )
