"""What the customer portal shows of one customer: each feature the customer holds
an entitlement of, with its real-time value, read exactly as
``GET /v1/customers/{c}/features/{f}`` reads it (``BalanceService.value``), and
each entitlement's balance, period and carried rollover.

The customer and org come from a verified portal token (``services/portal_tokens``),
never from the request. Reads are bounded: at most ``MAX_ENTITLEMENTS`` of the
customer's entitlements are looked at (a portal is a page for a person, not an
export).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from meterd.core.domain import Balance
from meterd.core.filters import Filter, Op
from meterd.services.balance import RealTimeValue
from meterd.services.queries import EntitlementQueries
from meterd.services.values import Entitlement, Feature

#: The most entitlements of one customer the portal reads.
MAX_ENTITLEMENTS = 1000
_PAGE = 200


@dataclass(frozen=True, slots=True)
class PortalEntitlement:
    balance: Balance
    billing_type: str
    #: What this renewed term carried from the one before (None: nothing carries).
    rolled_over: Decimal | None


@dataclass(frozen=True, slots=True)
class PortalFeature:
    key: str
    name: str
    units: str
    scale: int
    value: RealTimeValue
    entitlements: tuple[PortalEntitlement, ...]


class PortalView:
    def __init__(
        self,
        queries: EntitlementQueries,
        value: Callable[[str, str, str, datetime], RealTimeValue],
        features_of: Callable[[str], list[Feature]],
    ) -> None:
        """``value``: the value read (``BalanceService.value``); ``features_of``: an
        org's features."""
        self.queries = queries
        self.value = value
        self.features_of = features_of

    def overview(self, org: str, customer: str, now: datetime) -> list[PortalFeature]:
        """The customer's features (by key), each with its value and entitlements."""
        held = self._entitlements(org, customer, now)
        keys = sorted({feature for _, feature in held})
        by_id = {ent.id: ent for ent, _ in held}
        catalog = {f.key: f for f in self.features_of(org) if f.key in keys}
        shown = []
        for key in keys:
            value = self.value(org, customer, key, now)
            if not value.balances or key not in catalog:
                continue
            feature = catalog[key]
            shown.append(
                PortalFeature(
                    key=key,
                    name=feature.name,
                    units=feature.units,
                    scale=feature.scale,
                    value=value,
                    entitlements=tuple(
                        self._entitlement(org, b, by_id.get(b.entitlement_id), now)
                        for b in value.balances
                    ),
                )
            )
        return shown

    def _entitlements(
        self, org: str, customer: str, now: datetime
    ) -> list[tuple[Entitlement, str]]:
        """(entitlement, feature key) of the customer, at most ``MAX_ENTITLEMENTS``."""
        found: list[tuple[Entitlement, str]] = []
        cursor = None
        while len(found) < MAX_ENTITLEMENTS:
            page = self.queries.listing.page(
                org,
                [Filter("customer_id", Op.EQ, customer)],
                sort="number",
                descending=False,
                cursor=cursor,
                limit=_PAGE,
                now=now,
            )
            found.extend((Entitlement.from_row(row[0]), row[1]) for row in page.rows)
            if page.next is None:
                break
            cursor = page.next
        return found[:MAX_ENTITLEMENTS]

    def _entitlement(
        self, org: str, balance: Balance, ent: Entitlement | None, now: datetime
    ) -> PortalEntitlement:
        rolled_over = None
        if ent is not None and ent.rollover_max is not None:
            rolled_over = self._carried(org, ent.id, balance.period_start, now)
        return PortalEntitlement(
            balance=balance,
            billing_type=ent.billing_type if ent is not None else "",
            rolled_over=rolled_over,
        )

    def _carried(
        self, org: str, entitlement_id: uuid.UUID, period_start: datetime, now: datetime
    ) -> Decimal | None:
        for usage in self.queries.periods(org, entitlement_id, now):
            if usage.period.start == period_start:
                return usage.rolled_over
        return None
