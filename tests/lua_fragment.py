"""Run one pure fragment of a Lua script alone, through ``lupa``'s Lua 5.1 (the Lua
of Redis), so it can be held to its Python twin. ``redis`` is stubbed to fail: a
pure fragment calls no Redis; ``cjson.decode`` is stubbed with Python's ``json``
decoding as Redis's cjson does (numbers as doubles, null as a sentinel)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lupa import lua51

from meterd.lua import script_source

_NO_REDIS = """
redis = setmetatable({}, { __index = function(_, name)
  error("a pure fragment called redis." .. name)
end })
"""


class Fragment:
    """The functions ``exports`` of the assembled fragment ``name``, callable from
    Python; each ``Fragment`` is a fresh Lua state (fragments keep per-batch state)."""

    def __init__(self, name: str, exports: Sequence[str]) -> None:
        self.lua = lua51.LuaRuntime(unpack_returned_tuples=True)
        self.lua.execute(_NO_REDIS)
        self._null = self.lua.eval("{}")
        self.lua.globals().cjson = self.lua.table_from({"decode": self._decode})
        body = script_source(name)
        table = ", ".join(f"{n} = {n}" for n in exports)
        self._exports = self.lua.execute(f"{body}\nreturn {{ {table} }}")

    def __getattr__(self, name: str) -> Any:
        return self._exports[name]

    def to_lua(self, value: Any) -> Any:
        """A Python value (JSON-like) as a Lua value: dicts and lists as tables."""
        if value is None:
            return self._null
        if isinstance(value, dict):
            return self.lua.table_from({k: self.to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return self.lua.table_from([self.to_lua(v) for v in value])
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # cjson: every number is a double
        return value

    def _decode(self, text: Any) -> Any:
        raw = text.decode() if isinstance(text, bytes) else text
        return self.to_lua(json.loads(raw))
