"""JSON responses that carry decimals exactly.

FastAPI would turn a Decimal into a float (0.1 + 0.2 problems, and digits lost
past 15). The seed APIs want numbers, so those are written with simplejson's
exact Decimal support; the native API writes quantities as decimal strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import simplejson
from fastapi.responses import Response


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
