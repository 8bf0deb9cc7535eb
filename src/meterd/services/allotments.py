"""Allotments: a provider carves a child grant out of its own (issue 23, item 5).

``allot`` is one database transaction with the parent row locked first
(``AllotmentStore.lock_parent``: ``FOR UPDATE`` on PostgreSQL, the write lock on
SQLite), so carves of one parent run one after another in every API process:

1. a retried request (same idempotency key) finds its allotment and answers the
   same child, carving nothing more;
2. the parent's recorded status is brought up to the clock (a renewal due opens
   its period) and must be ACTIVE, PRE_PAID, with a limit in the period
   containing now;
3. its remaining must cover the quantity: the period's limit as stored (read
   under the lock) less what is consumed (flushed plus pending in Redis) and
   held, read just before the lock (``_used_now``: a carve waiting for the lock
   holds a pooled connection, and that read takes another) from the sources
   of the value read; more is a 409;
4. the period's limit drops by the quantity (and so does the renewal quantity of
   a renewing parent: later terms carve it too), and the child is inserted: same
   feature, dimensions, billing type, contract mode, term, end and grace,
   ``parent_id`` set, its own period from now to the parent period's end.

After the commit the resolution data of both customers is refreshed, so ingest,
reserve and holds see the parent's smaller limit and the child's grant at once,
and the parent's value read its ``allotted`` (what its live children hold, carried
in that data; a child's termination rewrites the parent's data too).

Usage racing a carve is never dropped: usage counted between the real-time read
and the refresh is counted against the old limit and may take the parent into
overage by that much (as usage past a limit always does); it is never lost and
the carves never exceed the limit (read under the lock) less what was consumed
and held when read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from meterd.core.domain import BillingType, Status
from meterd.core.errors import ConflictError, InvalidError
from meterd.core.quantity import from_units
from meterd.core.redis_keys import period_field
from meterd.services import values
from meterd.services.balance import BalanceService
from meterd.services.catalog.base import check_grant
from meterd.services.resolution import ResolutionCache
from meterd.storage.allotments import AllotmentStore
from meterd.storage.entitlements import EntitlementStore
from meterd.storage.holds import HoldStore
from meterd.storage.models import Allotment, Entitlement, Feature, UsagePeriod
from meterd.storage.transitions import TransitionStore


@dataclass(frozen=True, slots=True)
class Allotted:
    """One carve as the API shows it."""

    id: uuid.UUID
    parent_id: uuid.UUID
    child_id: uuid.UUID
    customer_id: str
    quantity: Decimal
    idempotency_key: str | None
    created_at: datetime
    #: The child's recorded status.
    status: str

    @classmethod
    def of(cls, row: Allotment, child_status: str) -> Allotted:
        return cls(
            id=row.id,
            parent_id=row.parent_id,
            child_id=row.child_id,
            customer_id=row.customer_id,
            quantity=row.quantity,
            idempotency_key=row.idempotency_key,
            created_at=row.created_at,
            status=child_status,
        )


@dataclass(frozen=True, slots=True)
class AllotResult:
    child: values.Entitlement
    #: False: a retry with the same idempotency key (nothing carved this time).
    created: bool


class AllotmentService:
    def __init__(
        self,
        store: AllotmentStore,
        entitlements: EntitlementStore,
        transitions: TransitionStore,
        balance: BalanceService,
        holds: HoldStore,
        resolution: ResolutionCache,
    ) -> None:
        self.store = store
        self.entitlements = entitlements
        self.transitions = transitions
        self.balance = balance
        self.holds = holds
        self.resolution = resolution

    def allot(
        self,
        org: str,
        parent_id: uuid.UUID,
        customer_id: str,
        quantity: Decimal,
        now: datetime,
        *,
        idempotency_key: str | None = None,
    ) -> AllotResult:
        """Carve ``quantity`` of the parent's grant into a new child entitlement of
        ``customer_id`` (see the module docstring)."""
        if quantity <= 0:
            raise InvalidError("quantity must be positive")
        # Read before the lock: a carve waiting for it holds a pooled connection, and
        # the read needs another (50 waiting carves would starve the one holding it).
        used = self._used_now(org, parent_id, now)
        with self.store.transaction() as s:
            self.store.lock_parent(s, org, parent_id)
            parent, feature_key = self.entitlements.locked(s, org, parent_id)
            done = (
                None
                if idempotency_key is None
                else self.store.by_key(s, parent_id, idempotency_key)
            )
            if done is not None:
                if done.customer_id != customer_id or done.quantity != quantity:
                    raise ConflictError(
                        f"idempotency key {idempotency_key!r} was used for another"
                        " allotment of this entitlement"
                    )
                child_id, created = done.child_id, False
            else:
                child_id = self._carve(
                    s, org, parent_id, customer_id, quantity, now, idempotency_key, used
                )
                created = True
        if created:
            self.transitions.settle(child_id, now, actor="allotment")
            self.resolution.refresh(
                [(org, parent.customer_id, feature_key), (org, customer_id, feature_key)], now
            )
        return AllotResult(values.Entitlement.from_row(self.entitlements.get(child_id)), created)

    def _carve(
        self,
        s: Session,
        org: str,
        parent_id: uuid.UUID,
        customer_id: str,
        quantity: Decimal,
        now: datetime,
        idempotency_key: str | None,
        used: tuple[datetime, Decimal] | None,
    ) -> uuid.UUID:
        self.transitions.settle(parent_id, now, actor="allotment", session=s)
        parent, _ = self.entitlements.locked(s, org, parent_id)
        feature = s.get(Feature, parent.feature_id)
        assert feature is not None  # features are never deleted
        check_grant(feature, quantity=quantity)
        if customer_id == parent.customer_id:
            raise InvalidError("a child grant is for another customer than the parent's")
        if parent.billing_type != BillingType.PRE_PAID.value:
            raise InvalidError(
                "only a PRE_PAID entitlement allots (a PAY_PER_USE one has no grant)"
            )
        if parent.status != Status.ACTIVE.value or parent.terminated_at is not None:
            raise ConflictError(
                f"entitlement {parent_id} is {parent.status}: it allots only ACTIVE"
            )
        period = self.store.current_period(s, parent_id, now)
        if period is None:
            raise ConflictError(f"entitlement {parent_id} has no period containing now")
        if period.quantity is None:
            raise ConflictError(
                f"entitlement {parent_id} is unlimited: there is no grant to carve from"
            )
        if used is None or used[0] != period.period_start:
            raise ConflictError(
                f"entitlement {parent_id} has just renewed (a new period): try again"
            )
        remaining = period.quantity - used[1]
        if quantity > remaining:
            raise ConflictError(
                f"entitlement {parent_id} has {max(remaining, Decimal(0))} remaining:"
                f" {quantity} cannot be allotted"
            )
        if parent.allotment is not None:
            allotted = self.store.allotted([parent_id], session=s).get(parent_id, Decimal(0))
            if allotted + quantity > parent.allotment:
                raise ConflictError(
                    f"entitlement {parent_id} may allot {parent.allotment} in all and has"
                    f" allotted {allotted}: {quantity} more cannot be allotted"
                )
        changes: dict[str, Decimal | None] = {"quantity": period.quantity - quantity}
        if parent.auto_renew:
            base = (
                parent.renewal_quantity if parent.renewal_quantity is not None else parent.quantity
            )
            if base is not None:
                if quantity > base:
                    raise ConflictError(
                        f"entitlement {parent_id} renews with {base}: later terms cannot"
                        f" give {quantity}"
                    )
                changes["renewal_quantity"] = base - quantity
        self.entitlements.update(
            org, parent_id, parent.row_version, changes, current_period={}, now=now, session=s
        )
        self.store.set_period_quantity(s, period.id, period.quantity - quantity, now)
        child = Entitlement(
            org_id=org,
            customer_id=customer_id,
            feature_id=parent.feature_id,
            plan_id=None,
            contract_id=None,
            quantity=quantity,
            billing_type=parent.billing_type,
            contract_mode=parent.contract_mode,
            status=Status.ACTIVE.value,
            priority=parent.priority,
            starts_at=now,
            ends_at=parent.ends_at,
            grace_until=parent.grace_until,
            issued_at=now,
            auto_renew=parent.auto_renew,
            renewal_quantity=quantity if parent.auto_renew else None,
            parent_id=parent_id,
            allotment=None,
            attributes={},
            filters=parent.filters,
            created_at=now,
            updated_at=now,
            term_months=parent.term_months,
            term_micros=parent.term_micros,
            term_anchor=parent.term_anchor,
        )
        first = UsagePeriod(
            period_start=now,
            period_end=period.period_end,
            quantity=quantity,
            consumed=Decimal(0),
            updated_at=now,
        )
        row = Allotment(
            org_id=org,
            parent_id=parent_id,
            customer_id=customer_id,
            quantity=quantity,
            idempotency_key=idempotency_key,
            created_at=now,
        )
        return self.store.add_child(s, child, first, row).id

    def _used_now(
        self, org: str, parent_id: uuid.UUID, now: datetime
    ) -> tuple[datetime, Decimal] | None:
        """(start, consumed and held) of the parent's stored period containing
        ``now``, in real time as the value read counts them: flushed plus pending,
        plus what live holds keep (None: no stored period contains now)."""
        ent = self.entitlements.get(parent_id)
        if ent.org_id != org:
            return None
        with self.store.sessions() as s:
            period = self.store.current_period(s, parent_id, now)
            scale = s.get(Feature, ent.feature_id).scale  # type: ignore[union-attr]
        if period is None:
            return None
        key = (parent_id, period.period_start)
        flushed, pending = self.balance.consumed([key], [scale])[key]
        field = period_field(parent_id, period.period_start)
        _, held = self.holds.live_figures(org, ent.customer_id, [field], now)
        return period.period_start, from_units(flushed + pending + held.get(field, 0), scale)

    def children(self, org: str, parent_id: uuid.UUID) -> list[Allotted]:
        """The parent's allotments, oldest first (404 for another org's id)."""
        return [Allotted.of(a, child.status) for a, child in self.store.children(org, parent_id)]

    def allotted(self, parent_ids: list[uuid.UUID]) -> dict[uuid.UUID, Decimal]:
        return self.store.allotted(parent_ids)

    def children_ended(self, child_ids: list[uuid.UUID], now: datetime) -> None:
        """Entitlements just recorded TERMINATED (by the lifecycle job: a void dated
        ahead fell due): rewrite the resolution data of the parents of those that were
        allotted, whose value read shows ``allotted`` from it. (An operator's
        terminate or void refreshes the parent itself: ``services/catalog``.)"""
        parents = self.store.parents_of(child_ids)
        if parents:
            self.resolution.refresh(parents, now)
