"""The org's customers for the console's list (``GET /v1/customers``): pages of
distinct customer ids by an opaque cursor, each with its entitlement count.

A page is read with one row more than asked: that row only says whether a next
page exists, so the last page never ends with an empty one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from meterd.core.paging import Cursor, decode, encode
from meterd.services.values import CustomerSummary
from meterd.storage.customers import CustomerDirectory

#: Customers on one page, at most.
MAX_CUSTOMERS_PAGE = 200
_SORT = "customer_id:asc"
#: Customer ids are no UUIDs: the boundary id travels as the cursor's value.
_NIL = str(uuid.UUID(int=0))


@dataclass(frozen=True, slots=True)
class CustomerPage:
    customers: list[CustomerSummary]
    #: The cursor of the next page; None: this is the last.
    next: str | None


class CustomerList:
    def __init__(self, directory: CustomerDirectory) -> None:
        self._directory = directory

    def page(
        self, org: str, *, prefix: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> CustomerPage:
        """``limit`` (1 to ``MAX_CUSTOMERS_PAGE``) customers of ``org`` after ``cursor``."""
        limit = max(1, min(limit, MAX_CUSTOMERS_PAGE))
        after = decode(cursor, _SORT, str).value if cursor else None
        rows = [
            CustomerSummary(customer_id=c, entitlements=n)
            for c, n in self._directory.page(org, prefix=prefix, after=after, limit=limit + 1)
        ]
        shown = rows[:limit]
        more = len(rows) > limit and bool(shown)
        next_cursor = encode(Cursor(_SORT, shown[-1].customer_id, _NIL, True)) if more else None
        return CustomerPage(customers=shown, next=next_cursor)
