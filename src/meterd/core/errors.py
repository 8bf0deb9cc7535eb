"""meterd's errors: one family, six kinds.

Every exception meterd raises on purpose is a ``MeterdError`` of exactly one
kind, and the edges decide by the kind, never by the class:

====================  ==================================  ==============  =====================
kind                  meaning                             HTTP            Celery task
====================  ==================================  ==============  =====================
``NotFoundError``     what was asked for does not exist   404             not retried
``ConflictError``     the state forbids it, or moved on   409             not retried
``InvalidError``      the request itself is wrong         400             not retried
``UnavailableError``  a store could not answer now        503 + Retry-    retried with backoff
                                                          After
``UnauthorizedError`` the caller's credentials do not     401             (API only)
                      hold (an expired API key)
``RateLimitedError``  the caller is over its rate limit   429 + Retry-    (API only)
                                                          After
====================  ==================================  ==============  =====================

``meterd.api.errors`` and ``meterd.cli`` map the kinds once; the tasks retry
``UnavailableError`` (see ``meterd.tasks``). A new error is a subclass of one
kind, so it is answered correctly everywhere without touching an edge. The
kinds also keep the built-in base their callers expect (``LookupError`` for
not found, ``ValueError`` for invalid), so ``except ValueError`` around
parsing still works.

This module imports nothing: every layer may raise these.
"""

from __future__ import annotations


class MeterdError(Exception):
    """The base of every error meterd defines."""


class NotFoundError(MeterdError, LookupError):
    """A row that should exist does not (carries what was looked for)."""

    def __init__(self, what: str, key: object) -> None:
        super().__init__(f"{what} {key} not found")
        self.what = what
        self.key = key


class ConflictError(MeterdError):
    """The request is well formed, but the current state does not allow it."""


class InvalidError(MeterdError, ValueError):
    """The request is malformed or asks for something meterd does not do."""


class UnavailableError(MeterdError):
    """A store (Redis, the database) could not answer now; the same request may
    succeed later. ``retry_after`` is a hint in seconds."""

    retry_after: int = 1


class UnauthorizedError(MeterdError):
    """The caller's credentials do not hold (a key past its expiry)."""


class RateLimitedError(MeterdError):
    """The caller asks faster than its limit allows; ``retry_after`` seconds until
    it may ask again."""

    retry_after: int = 1


class StaleVersionError(ConflictError):
    """The row changed since the caller read it (optimistic concurrency on row_version)."""

    def __init__(self, key: object, expected: int, actual: int) -> None:
        super().__init__(f"{key} is at row_version {actual}, not {expected}: read it again")
        self.expected = expected
        self.actual = actual


class DuplicateError(ConflictError):
    """A key already taken in the org."""


#: The kinds, in the order the edges test them (a class belongs to exactly one).
KINDS: tuple[type[MeterdError], ...] = (
    NotFoundError,
    ConflictError,
    InvalidError,
    UnavailableError,
    UnauthorizedError,
    RateLimitedError,
)


def kind_of(error: BaseException) -> type[MeterdError] | None:
    """The kind ``error`` belongs to, or None for an error meterd did not define."""
    return next((kind for kind in KINDS if isinstance(error, kind)), None)
