"""The org's customers, as its entitlements name them: a keyset page of distinct
customer ids with how many entitlements each holds (``GET /v1/customers``).

meterd keeps no customer table: a customer exists once an entitlement names it.
The page is one read of the ``ix_entitlements_resolution`` index (org, customer,
feature) from the cursor on: grouped by customer id, ordered by it, cut at the
limit, so it reads at most the entitlements of the customers it returns (and of
those it skips by prefix within that index range), never the org's whole table.

A prefix bounds the range on both sides (``prefix <= customer_id < prefix + U+10FFFF``)
and is checked exactly with ``LIKE`` (escaped): never an id that does not match.
The range holds every match under a collation that orders by code point (``C``,
``C.UTF-8``, SQLite's ``BINARY``); under a linguistic collation an id whose order
the locale bends (punctuation it ignores) may be left out of a prefix search.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from meterd.storage.models import Entitlement

#: Sorts after every character a customer id may hold: the prefix range's end.
_LAST_CHAR = "\U0010ffff"


def _escaped(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class CustomerDirectory:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def page(
        self, org: str, *, prefix: str | None, after: str | None, limit: int
    ) -> list[tuple[str, int]]:
        """Up to ``limit`` customers of ``org`` whose id starts with ``prefix``, after
        the id ``after``, in id order, each with its entitlement count."""
        column = Entitlement.customer_id
        query = select(column, func.count()).where(Entitlement.org_id == org)
        if prefix:
            query = query.where(
                column >= prefix,
                column < prefix + _LAST_CHAR,
                column.like(_escaped(prefix) + "%", escape="\\"),
            )
        if after is not None:
            query = query.where(column > after)
        query = query.group_by(column).order_by(column).limit(limit)
        with self._sessions() as session:
            return [(c, n) for c, n in session.execute(query)]
