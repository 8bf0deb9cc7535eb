"""The read side the API serves: entitlements with their real-time balances, list
pages, periods (real time too) and the audit trail, always within one org (the
seed pages' reads are in ``services/compat_queries.py``).

An entitlement of another org is answered exactly like one that does not exist
(``NotFoundError``), so ids of other orgs cannot be probed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from meterd.core.domain import Balance, Period
from meterd.core.errors import NotFoundError
from meterd.core.filters import Filter, Kind
from meterd.core.paging import Cursor
from meterd.services.balance import BalanceService, PeriodUsage
from meterd.services.values import Entitlement, Transition
from meterd.storage.entitlements import EntitlementStore
from meterd.storage.listing import (
    ENTITLEMENT_COLUMNS,
    ENTITLEMENT_SORTS,
    EntitlementListing,
    Page,
)
from meterd.storage.resolution_views import entitlement_view
from meterd.storage.transitions import TransitionStore
from meterd.storage.usage import UsageStore

#: Filterable fields of the entitlement list, and the type of each.
ENTITLEMENT_FILTERS: dict[str, Kind] = {
    name: kind for name, (kind, _) in ENTITLEMENT_COLUMNS.items()
}
#: Sort keys of the entitlement list.
ENTITLEMENT_SORT_KEYS: frozenset[str] = frozenset(ENTITLEMENT_SORTS)

WithBalance = tuple[Entitlement, str, Balance]


@dataclass(frozen=True, slots=True)
class BalancedPage:
    """A page of entitlements, each with its feature key and real-time balance."""

    rows: list[WithBalance]
    next: Cursor | None
    previous: Cursor | None
    total: int


class EntitlementQueries:
    def __init__(
        self,
        listing: EntitlementListing,
        entitlements: EntitlementStore,
        usage: UsageStore,
        transitions: TransitionStore,
        balance: BalanceService,
    ) -> None:
        self.listing = listing
        self.entitlements = entitlements
        self.usage = usage
        self.transitions = transitions
        self.balance = balance

    def owned(self, org: str, entitlement_id: uuid.UUID) -> tuple[Entitlement, str]:
        """The entitlement and its feature key, if it belongs to ``org``."""
        found = self.entitlements.with_feature(entitlement_id)
        if found is None or found[0].org_id != org:
            raise NotFoundError("entitlement", entitlement_id)
        return Entitlement.from_row(found[0]), found[1]

    def get(self, org: str, entitlement_id: uuid.UUID, now: datetime) -> WithBalance:
        ((ent, feature, balance),) = self.with_balances([self.owned(org, entitlement_id)], now)
        return ent, feature, balance

    def with_balances(
        self, rows: Sequence[tuple[Entitlement, str]], now: datetime
    ) -> list[WithBalance]:
        """Each (entitlement, feature key) with its real-time balance, read at once."""
        ids = [ent.id for ent, _ in rows]
        periods = self.listing.periods_of(ids)
        suspensions = self.listing.suspensions_of(ids)
        scales = self.listing.feature_scales({ent.feature_id for ent, _ in rows})
        views = [
            entitlement_view(
                ent, periods[ent.id], suspensions.get(ent.id, ()), scale=scales[ent.feature_id]
            )
            for ent, _ in rows
        ]
        balances = self.balance.balances_of(views, now)
        return [(ent, feature, balances[ent.id]) for ent, feature in rows]

    def page(
        self,
        org: str,
        filters: Sequence[Filter],
        *,
        sort: str,
        descending: bool,
        cursor: Cursor | None,
        limit: int,
        now: datetime,
        quantity_used: Sequence[Filter] = (),
        search: str | None = None,
    ) -> BalancedPage:
        page: Page = self.listing.page(
            org,
            filters,
            sort=sort,
            descending=descending,
            cursor=cursor,
            limit=limit,
            now=now,
            quantity_used=quantity_used,
            search=search,
        )
        rows = self.with_balances(
            [(Entitlement.from_row(row[0]), row[1]) for row in page.rows], now
        )
        return BalancedPage(rows, page.next, page.previous, page.total)

    def periods(self, org: str, entitlement_id: uuid.UUID, now: datetime) -> list[PeriodUsage]:
        """The entitlement's usage history, each period with its real-time consumption
        (flushed and not yet flushed, as the value read: ``BalanceService.history``)."""
        ent, _ = self.owned(org, entitlement_id)
        stored = self.usage.periods_of(entitlement_id)
        scale = self.listing.feature_scales({ent.feature_id})[ent.feature_id]
        suspensions = self.listing.suspensions_of([ent.id]).get(ent.id, ())
        view = entitlement_view(ent, stored, suspensions, scale=scale)
        flushed = [(Period(p.period_start, p.period_end, p.quantity), p.consumed) for p in stored]
        return self.balance.history(view, flushed, now)

    def history(self, org: str, entitlement_id: uuid.UUID) -> list[Transition]:
        self.owned(org, entitlement_id)
        return [Transition.from_row(row) for row in self.transitions.history(entitlement_id)]

    def ids_of(self, org: str) -> list[uuid.UUID]:
        """The ids of the org's entitlements, for matching an id prefix."""
        return self.entitlements.ids_of(org)
