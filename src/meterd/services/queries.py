"""The read side the API serves: entitlements with their real-time balances, list
pages, the seed listings, periods (real time too) and the audit trail, always
within one org.

An entitlement of another org is answered exactly like one that does not exist
(``NotFoundError``), so ids of other orgs cannot be probed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from meterd.domain import Balance, Period
from meterd.errors import NotFoundError
from meterd.filters import Filter, Kind, WorkspaceFilters
from meterd.paging import Cursor
from meterd.services.balance import BalanceService, PeriodUsage
from meterd.services.values import Entitlement, Feature, Plan, PlanFamily, Transition
from meterd.storage.entitlements import EntitlementStore
from meterd.storage.listing import (
    ENTITLEMENT_COLUMNS,
    ENTITLEMENT_SORTS,
    EntitlementListing,
    Page,
)
from meterd.storage.resolution import burn_down_order
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
Grant = tuple[Entitlement, Feature, Balance]


def has_room(balance: Balance) -> bool:
    """Usage would still fit in the current period: unlimited, or consumed below the
    quantity (what ingest.lua calls room: the period's limit minus its usage)."""
    return balance.quantity is None or balance.consumed < balance.quantity


def choose_for_usage(rows: Sequence[Grant]) -> Grant | None:
    """The grant usage would burn right now, chosen exactly as burn-down does.

    Burn-down (ingest.lua) walks the usable grants (``Balance.usable``: inside their
    window at the balances' instant, not suspended or terminated) in
    ``burn_down_order`` (lowest priority, soonest end with open-ended last, oldest
    number) and lets each take the room its current period has left; whatever is left
    after the last one lands there as overage. So the grant the next unit of usage
    burns is:

    1. the first usable grant in burn-down order that still has room;
    2. else the last usable one in that order (where overage lands);
    3. else, when nothing is usable (all pending, ended, suspended or terminated),
       the most recently issued grant (highest number), so there is still one to show;
    4. None for no rows.

    Burn-down works per feature; given grants of several features, the rule runs
    over them as one list.
    """
    usable = sorted(
        (row for row in rows if row[2].usable),
        key=lambda row: burn_down_order(entitlement_view(row[0], (), scale=6)),  # order only
    )
    for row in usable:
        if has_room(row[2]):
            return row
    if usable:
        return usable[-1]
    return max(rows, key=lambda row: row[0].number, default=None)


@dataclass(frozen=True, slots=True)
class BalancedPage:
    """A page of entitlements, each with its feature key and real-time balance."""

    rows: list[WithBalance]
    next: Cursor | None
    previous: Cursor | None
    total: int


@dataclass(frozen=True, slots=True)
class WorkspaceItem:
    entitlement: Entitlement
    feature: Feature
    plan: Plan | None
    families: list[PlanFamily]
    balance: Balance


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

    def grants_of_customer(
        self,
        org: str,
        customer_id: str,
        filters: Sequence[Filter],
        limit: int,
        now: datetime,
        search: str | None = None,
    ) -> list[tuple[Entitlement, Feature, Balance]]:
        """A customer's entitlements with their features and balances (filters on the
        grants; ``search`` on the feature's key, name or description)."""
        grants = [
            (Entitlement.from_row(ent), Feature.from_row(feature))
            for ent, feature in self.listing.grants_of_customer(
                org, customer_id, filters, limit, now, search
            )
        ]
        balanced = self.with_balances([(ent, feature.key) for ent, feature in grants], now)
        return [
            (ent, feature, balance)
            for (ent, feature), (_, _, balance) in zip(grants, balanced, strict=True)
        ]

    def workspace_page(
        self, org: str, filters: WorkspaceFilters, page: int, size: int, now: datetime
    ) -> tuple[list[WorkspaceItem], int]:
        """One page of the workspace seed listing, and the total matching."""
        rows, total = self.listing.workspace_page(org, filters, page, size, now)
        balanced = self.with_balances(
            [(Entitlement.from_row(ent), feature.key) for ent, feature, _, _ in rows], now
        )
        items = [
            WorkspaceItem(
                ent,
                Feature.from_row(feature),
                Plan.from_row(plan) if plan is not None else None,
                [PlanFamily.from_row(f) for f in families],
                balance,
            )
            for (_, feature, plan, families), (ent, _, balance) in zip(rows, balanced, strict=True)
        ]
        return items, total

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
