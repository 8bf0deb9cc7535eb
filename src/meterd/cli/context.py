"""The runtime a command works with, built on first use (imports the stores then)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meterd.runtime import Runtime

#: Database URLs this process found holding meterd's schema.
_databases_ready: set[str] = set()


def get_runtime() -> Runtime:
    """This process's runtime, once its database is known to hold meterd's schema: a
    command run in the wrong directory (the default ``sqlite:///meterd.db`` is relative
    to it) says where it looked and what to do, instead of creating an empty database
    and failing on "no such table"."""
    from meterd.config import get_settings
    from meterd.core.errors import ConflictError
    from meterd.runtime import get_runtime as shared_runtime
    from meterd.storage.migrate import schema_problem

    url = get_settings().database_url
    if url not in _databases_ready:
        problem = schema_problem(url)
        if problem is not None:
            raise ConflictError(problem)
        _databases_ready.add(url)
    return shared_runtime()
