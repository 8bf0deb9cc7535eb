"""Ids on input: whole, or any unique prefix of one (as printed whole in tables)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

from meterd.core.errors import InvalidError, NotFoundError

#: Shortest prefix taken: shorter ones match too much to be worth a look-up.
MIN_PREFIX = 4


def match_prefix(text: str, known: Iterable[str], what: str) -> str:
    """The one id of ``known`` that ``text`` is a prefix of (or equals); an unknown
    prefix is ``NotFoundError``, an ambiguous one ``InvalidError`` naming the matches."""
    prefix = text.strip().lower()
    if len(prefix) < MIN_PREFIX:
        raise InvalidError(f"{what} id {text!r}: give at least {MIN_PREFIX} characters")
    found = sorted({k for k in known if k.lower().startswith(prefix)})
    if not found:
        raise NotFoundError(what, text)
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise InvalidError(
            f"{what} id {text!r} is ambiguous: {len(found)} match ({shown}); give more of it"
        )
    return found[0]


def resolve_uuid(text: str, known: Callable[[], Iterable[uuid.UUID]], what: str) -> uuid.UUID:
    """A UUID given whole (no look-up), or the one of ``known()`` it is a prefix of."""
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    return uuid.UUID(match_prefix(text, (str(k) for k in known()), what))
