"""Entitlements: grants of a feature to a customer, their changes, operator steps
and periods.

Every change refreshes the Redis resolution data right after the database
commit, so the next ingested event already sees it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from meterd.core.domain import Aggregation, BillingType, Status
from meterd.core.errors import InvalidError, StaleVersionError
from meterd.core.lifecycle import OperatorAction, operator_transition
from meterd.core.meters import check_dimensions
from meterd.core.timeutil import isoformat, month_start, next_month_start
from meterd.services import values
from meterd.services.catalog.base import check_grant
from meterd.services.catalog.rules import (
    EntitlementChange,
    NewEntitlement,
    changed_values,
    check_new,
    check_rollover,
    term_columns,
    term_of,
)
from meterd.services.resolution import ResolutionCache
from meterd.storage.entitlements import EntitlementStore
from meterd.storage.features import FeatureStore
from meterd.storage.models import Entitlement, Feature, UsagePeriod
from meterd.storage.transitions import TransitionStore


class Entitlements:
    def __init__(
        self,
        features: FeatureStore,
        entitlements: EntitlementStore,
        transitions: TransitionStore,
        resolution: ResolutionCache,
    ) -> None:
        self.features = features
        self.entitlements = entitlements
        self.transitions = transitions
        self.resolution = resolution

    def create_entitlement(self, spec: NewEntitlement, now: datetime) -> values.Entitlement:
        check_new(spec)
        term = term_of(spec)
        ends_at = spec.ends_at
        if term is not None and ends_at is None:
            ends_at = term.start(spec.starts_at, 1)
        feature = self.features.by_key(spec.org, spec.feature)
        check_grant(
            feature,
            quantity=spec.quantity,
            renewal_quantity=spec.renewal_quantity,
            allotment=spec.allotment,
            rollover_max=spec.rollover_max,
            rollover_min=spec.rollover_min,
        )
        check_rollover(
            spec.rollover_max,
            spec.rollover_min,
            renews=term is not None,
            aggregation=Aggregation(feature.aggregation),
        )
        filters = check_dimensions(spec.filters, "filters") if spec.filters is not None else None
        grace_until = ends_at + spec.grace if ends_at and spec.grace else None
        ent = Entitlement(
            org_id=spec.org,
            customer_id=spec.customer_id,
            feature_id=feature.id,
            plan_id=spec.plan_id,
            contract_id=spec.contract_id,
            quantity=spec.quantity,
            billing_type=spec.billing_type.value,
            contract_mode=spec.contract_mode.value,
            # What the clock says beyond this (grace, renewals, expiry) is settled, with
            # its audit rows, right after the insert.
            status=(Status.PENDING if now < spec.starts_at else Status.ACTIVE).value,
            priority=spec.priority,
            starts_at=spec.starts_at,
            ends_at=ends_at,
            grace_until=grace_until,
            issued_at=now,
            auto_renew=spec.auto_renew,
            renewal_quantity=spec.renewal_quantity,
            parent_id=spec.parent_id,
            allotment=spec.allotment,
            attributes=dict(spec.attributes),
            filters=filters or None,
            rollover_max=spec.rollover_max,
            rollover_min=spec.rollover_min,
            created_at=now,
            updated_at=now,
            **term_columns(term, spec.starts_at),
        )
        if spec.billing_type is BillingType.PRE_PAID:
            first = UsagePeriod(
                period_start=spec.starts_at,
                period_end=ends_at,
                quantity=spec.quantity,
                consumed=Decimal(0),
                updated_at=now,
            )
        else:
            # The month of starts_at opens now; the lifecycle job opens each next one.
            first = UsagePeriod(
                period_start=month_start(spec.starts_at),
                period_end=next_month_start(spec.starts_at),
                quantity=spec.quantity,
                consumed=Decimal(0),
                updated_at=now,
            )
            ent.next_period_at = next_month_start(spec.starts_at)
        self.entitlements.add(ent, [first])
        self.transitions.settle(ent.id, now, actor="created")
        self.resolution.refresh([(spec.org, spec.customer_id, spec.feature)], now)
        return values.Entitlement.from_row(self.entitlements.get(ent.id))

    def update_entitlement(
        self,
        org: str,
        entitlement_id: uuid.UUID,
        change: EntitlementChange,
        now: datetime,
    ) -> None:
        """Change quantity, renewal quantity, priority, contract mode, auto-renew or
        end, if the row is still at ``change.row_version``, in one transaction: the
        recorded status is first brought up to the clock (renewals the job has not
        recorded yet open their periods), then changed, then settled again (an end
        moved later reopens an EXPIRED entitlement, with its audit row). A new
        quantity applies to the current period (earlier periods keep theirs); a new
        end moves the grace period along and ends the last PRE_PAID period there
        (the one usage up to the end lands in, also when the entitlement was
        EXPIRED or in GRACE). Ingest sees it at once."""
        with self.entitlements.transaction() as s:
            ent, feature = self.entitlements.locked(s, org, entitlement_id)
            if ent.row_version != change.row_version:
                raise StaleVersionError(entitlement_id, change.row_version, ent.row_version)
            self.transitions.settle(entitlement_id, now, actor="changed", session=s)
            ent, feature = self.entitlements.locked(s, org, entitlement_id)
            scaled = s.get(Feature, ent.feature_id)
            assert scaled is not None  # features are never deleted
            check_grant(
                scaled,
                quantity=change.quantity,
                renewal_quantity=change.renewal_quantity,
                allotment=change.allotment,
            )
            values, period = changed_values(ent, change)
            self.entitlements.update(
                org, entitlement_id, ent.row_version, values,
                current_period=period, now=now, session=s,
            )  # fmt: skip
            if "ends_at" in values and ent.billing_type == BillingType.PRE_PAID.value:
                # The term's last period takes usage up to the end (also an EXPIRED or
                # GRACE one reopened: no period contains now): it ends there too.
                self.entitlements.move_last_period_end(s, entitlement_id, values["ends_at"], now)
            self.transitions.settle(entitlement_id, now, actor="changed", session=s, caused_at=now)
        self.resolution.refresh([(org, ent.customer_id, feature)], now)

    def change_status(
        self,
        entitlement_id: uuid.UUID,
        action: OperatorAction,
        now: datetime,
        *,
        reason: str = "",
        expected_version: int | None = None,
        actor: str = "operator",
    ) -> values.Entitlement:
        """Suspend, resume or terminate an entitlement (see
        ``meterd.core.lifecycle.operator_transition``), recorded in the audit trail with a
        notification; ingest sees the new status at once."""
        ent, feature = self.transitions.apply_operator_step(
            entitlement_id,
            lambda status, starts_at, suspended_from: operator_transition(
                action, status, starts_at, now, reason, suspended_from
            ),
            expected_version=expected_version,
            actor=actor,
            now=now,
        )
        if self.transitions.settle(entitlement_id, now, actor=actor):
            ent = self.entitlements.get(entitlement_id)
        return self._refreshed(ent, feature, now)

    def void(
        self,
        entitlement_id: uuid.UUID,
        now: datetime,
        *,
        at: datetime | None = None,
        reason: str = "",
        expected_version: int | None = None,
        actor: str = "operator",
    ) -> values.Entitlement:
        """Void the grant from ``at`` (default now; ahead allowed, never before now:
        usage already counted after it would stay counted): usage timed before
        still counts, none after, in ingest, reserve, holds and every read at once
        (the resolution data carries ``terminated_at``). Audited and notified; a
        void retried with the same instant changes nothing."""
        at = _not_past(at, now, "a void")
        ent, feature, _ = self.transitions.void(
            entitlement_id, at, reason, expected_version=expected_version, actor=actor, now=now
        )
        return self._refreshed(ent, feature, now)

    def reset(
        self,
        entitlement_id: uuid.UUID,
        now: datetime,
        *,
        at: datetime | None = None,
        reason: str = "",
        expected_version: int | None = None,
        actor: str = "operator",
    ) -> values.Entitlement:
        """Close the PRE_PAID period containing ``at`` (default now; never before now)
        there and open a fresh one from it to that period's end, with the period's
        quantity and nothing consumed: a fresh allowance mid-term. Usage timed before
        ``at`` counts on the old period. Audited and notified; retried at the same
        instant, nothing changes."""
        at = _not_past(at, now, "a reset")
        ent, feature, _ = self.transitions.reset(
            entitlement_id, at, reason, expected_version=expected_version, actor=actor, now=now
        )
        return self._refreshed(ent, feature, now)

    def _refreshed(self, ent: Entitlement, feature: str, now: datetime) -> values.Entitlement:
        """The entitlement a step changed, after ingest's resolution data was rewritten:
        its customer's, and, for a child entitlement now TERMINATED, its parent's
        customer's too (the parent's ``allotted``, which the value read shows from
        that data, no longer counts it)."""
        wanted = [(ent.org_id, ent.customer_id, feature)]
        if ent.parent_id is not None and ent.status == Status.TERMINATED.value:
            org, customer, parent_feature = self.entitlements.owner_of(ent.parent_id)
            wanted.append((org, customer, parent_feature))
        self.resolution.refresh(wanted, now)
        return values.Entitlement.from_row(ent)

    def open_period(
        self,
        entitlement_id: uuid.UUID,
        start: datetime,
        end: datetime | None,
        quantity: Decimal | None,
        now: datetime,
    ) -> None:
        """Open a new usage period of a PRE_PAID entitlement (as a renewal does);
        earlier periods keep their usage, and late events still land in them."""
        org, customer, feature = self.entitlements.owner_of(entitlement_id)
        self.entitlements.add_period(
            UsagePeriod(
                org_id=org,
                entitlement_id=entitlement_id,
                period_start=start,
                period_end=end,
                quantity=quantity,
                consumed=Decimal(0),
                updated_at=now,
            )
        )
        self.resolution.refresh([(org, customer, feature)], now)


#: How far before now an explicit ``at`` of a void or reset is still "now" (a
#: caller's clock, a request in flight).
AT_SKEW = timedelta(seconds=5)


def _not_past(at: datetime | None, now: datetime, what: str) -> datetime:
    if at is None:
        return now
    if at < now - AT_SKEW:
        raise InvalidError(
            f"{what} acts from now on: {isoformat(at)} is past (usage counted since would"
            " stay counted; void those events first, POST /v1/events/void)"
        )
    return max(at, now)
