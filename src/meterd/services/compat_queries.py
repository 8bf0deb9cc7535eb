"""The seed pages' read side: a customer's grants with their features and real-time
balances (the Zenskar and tenant pages), the grant usage would burn now (the
tenant page), and the workspace page, always within one org.

Balances are read as every native read does (``EntitlementQueries.with_balances``);
only the listings and the choice of a grant are the pages' own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from meterd.core.compat_filters import WorkspaceFilters
from meterd.core.domain import Balance
from meterd.core.filters import Filter
from meterd.services.queries import EntitlementQueries
from meterd.services.values import Entitlement, Feature, Plan, PlanFamily
from meterd.storage.compat_listing import CompatListing
from meterd.storage.resolution import burn_down_order
from meterd.storage.resolution_views import entitlement_view

#: A grant: the entitlement, its feature and its real-time balance.
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
class WorkspaceItem:
    entitlement: Entitlement
    feature: Feature
    plan: Plan | None
    families: list[PlanFamily]
    balance: Balance


class CompatQueries:
    def __init__(self, listing: CompatListing, queries: EntitlementQueries) -> None:
        self.listing = listing
        self.queries = queries

    def grants_of_customer(
        self,
        org: str,
        customer_id: str,
        filters: Sequence[Filter],
        limit: int,
        now: datetime,
        search: str | None = None,
    ) -> list[Grant]:
        """A customer's entitlements with their features and balances (filters on the
        grants; ``search`` on the feature's key, name or description)."""
        grants = [
            (Entitlement.from_row(ent), Feature.from_row(feature))
            for ent, feature in self.listing.grants_of_customer(
                org, customer_id, filters, limit, now, search
            )
        ]
        balanced = self.queries.with_balances([(ent, feature.key) for ent, feature in grants], now)
        return [
            (ent, feature, balance)
            for (ent, feature), (_, _, balance) in zip(grants, balanced, strict=True)
        ]

    def workspace_page(
        self, org: str, filters: WorkspaceFilters, page: int, size: int, now: datetime
    ) -> tuple[list[WorkspaceItem], int]:
        """One page of the workspace seed listing, and the total matching."""
        rows, total = self.listing.workspace_page(org, filters, page, size, now)
        keyed = [(Entitlement.from_row(ent), feature.key) for ent, feature, _, _ in rows]
        balanced = self.queries.with_balances(keyed, now)
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
