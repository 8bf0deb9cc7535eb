"""The one loader of meterd's Lua scripts: read, assemble, cache.

Every script lives in this package as a ``.lua`` file and every caller (the
counter store, the rate limiter, the Redis broker's pop) gets its text here,
never from the file system itself. A script may be assembled from fragments, as
BullMQ's commands are: a line ``--- @include "ingest/calendar"`` is replaced by
the text of ``ingest/calendar.lua`` (names are relative to this package, the
``.lua`` suffix optional), whose own includes are resolved first. Each fragment
enters a script once, at its first include, so fragments may include what they
need without duplicating it. A missing fragment or an include cycle raises
``LuaIncludeError`` naming the chain. The result is one script, run by Redis as
one atomic call; a fragment alone is plain Lua too (tests run the pure ones
through ``lupa``).

This module imports only ``meterd.core.errors`` and no Redis client: callers register the
text (``client.register_script(script_source("ingest"))``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from importlib import resources

from meterd.core.errors import InvalidError

__all__ = ["LuaIncludeError", "assemble", "read_fragment", "script_source"]

#: An include line: ``--- @include "name"`` alone on its line.
INCLUDE = re.compile(r'^--- @include "([^"]+)"[ \t]*$', re.MULTILINE)


class LuaIncludeError(InvalidError):
    """A script includes a fragment that does not exist, or includes itself (a
    broken package: found by the tests, never by a request)."""


def _file_name(name: str) -> str:
    return name if name.endswith(".lua") else f"{name}.lua"


def read_fragment(name: str) -> str:
    """The text of one ``.lua`` file of this package, as stored (includes kept)."""
    path = resources.files(__name__)
    for part in _file_name(name).split("/"):
        path = path.joinpath(part)
    return path.read_text(encoding="utf-8")


def assemble(name: str, read: Callable[[str], str] = read_fragment) -> str:
    """The script ``name`` with every include resolved (recursively, each fragment
    once). ``read`` maps a file name (``"ingest/calendar.lua"``) to its text and
    raises ``FileNotFoundError`` for a missing one."""
    included: set[str] = set()

    def expand(file: str, chain: tuple[str, ...]) -> str:
        if file in chain:
            raise LuaIncludeError("include cycle: " + " -> ".join((*chain, file)))
        try:
            text = read(file)
        except (FileNotFoundError, IsADirectoryError) as exc:
            where = f"{chain[-1]} includes " if chain else ""
            raise LuaIncludeError(f"{where}{file}, which does not exist") from exc
        included.add(file)

        def replace(match: re.Match[str]) -> str:
            target = _file_name(match.group(1))
            if target in chain or target == file:
                raise LuaIncludeError("include cycle: " + " -> ".join((*chain, file, target)))
            if target in included:
                return f"-- ({target}: included above)"
            return expand(target, (*chain, file)).rstrip("\n")

        return INCLUDE.sub(replace, text)

    return expand(_file_name(name), ())


@cache
def script_source(name: str) -> str:
    """The assembled text of the script ``name`` (``"ingest"`` or ``"ingest.lua"``),
    read once per process."""
    return assemble(name)
