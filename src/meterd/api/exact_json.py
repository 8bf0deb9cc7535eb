"""JSON responses that carry decimals exactly.

FastAPI would turn a Decimal into a float (0.1 + 0.2 problems, and digits lost
past 15). The seed APIs want numbers, so those are written with simplejson's
exact Decimal support; the native API writes quantities as decimal strings.
"""

from __future__ import annotations

from typing import Any

import simplejson
from fastapi.responses import Response


class ExactJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return simplejson.dumps(
            content, use_decimal=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
