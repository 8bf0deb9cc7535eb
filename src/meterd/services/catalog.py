"""Create organisations, features, entitlements and their periods.

Every change to entitlements refreshes the Redis resolution data right after
the database commit, so the next ingested event already sees it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from meterd.domain import (
    FEATURE_KEY_PATTERN,
    ORG_ID_PATTERN,
    Aggregation,
    BillingType,
    ContractMode,
    FeatureType,
    Status,
)
from meterd.errors import InvalidError, StaleVersionError
from meterd.lifecycle import (
    MIN_RENEWING_TERM,
    OperatorAction,
    extend_term,
    operator_transition,
)
from meterd.meters import check_dimensions, check_meter, parse_path, path_text
from meterd.plans import TermUnit, condition_family, term_end, term_kind
from meterd.quantity import QuantityError, check_scaled
from meterd.services.resolution import ResolutionCache
from meterd.storage.entitlements import EntitlementStore
from meterd.storage.features import FeatureStore
from meterd.storage.meter_versions import MeterVersions
from meterd.storage.models import Entitlement, Feature, Plan, UsagePeriod
from meterd.storage.organisations import OrganisationStore
from meterd.storage.plans import PlanStore
from meterd.storage.transitions import TransitionStore
from meterd.terms import Term
from meterd.timeutil import month_start, next_month_start


class CatalogError(InvalidError):
    """A request to the catalog that cannot be carried out as asked."""


class _Unset:
    """Marks a field a change leaves alone (None means "set to null")."""


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class EntitlementChange:
    row_version: int
    quantity: Decimal | None = UNSET
    renewal_quantity: Decimal | None = UNSET
    ends_at: datetime | None = UNSET
    priority: int | None = None
    contract_mode: ContractMode | None = None
    auto_renew: bool | None = None
    allotment: Decimal | None = UNSET
    #: Replaces the whole object ({} clears it).
    attributes: dict[str, Any] = UNSET
    #: Dimensions are fixed at creation: given, they must be the ones stored.
    filters: Mapping[str, Any] | None = UNSET


@dataclass(frozen=True, slots=True)
class NewPlan:
    org: str
    key: str
    feature: str
    quantity: Decimal | None
    display_name: str = ""
    description: str = ""
    billing_type: BillingType = BillingType.PRE_PAID
    contract_mode: ContractMode = ContractMode.PRODUCTION
    term_value: int | None = None
    term_unit: TermUnit | None = None
    grace_days: int = 0
    auto_renew: bool = False
    renewal_quantity: Decimal | None = None
    families: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NewEntitlement:
    org: str
    customer_id: str
    feature: str
    quantity: Decimal | None
    starts_at: datetime
    ends_at: datetime | None = None
    billing_type: BillingType = BillingType.PRE_PAID
    contract_mode: ContractMode = ContractMode.PRODUCTION
    priority: int = 0
    grace: timedelta | None = None
    auto_renew: bool = False
    renewal_quantity: Decimal | None = None
    contract_id: str | None = None
    plan_id: uuid.UUID | None = None
    parent_id: uuid.UUID | None = None
    allotment: Decimal | None = None
    #: The term it renews by; None: from ``starts_at`` to ``ends_at`` (whole calendar
    #: months when that is one, else the exact duration).
    term: Term | None = None
    #: The tenant page's own fields (a JSON object, validated by the API).
    attributes: dict[str, Any] = field(default_factory=dict)
    #: Dimensions (``meterd.meters.check_dimensions``): only usage whose ``data`` has
    #: these values counts on it. None or {}: all usage of the feature.
    filters: Mapping[str, Any] | None = None


#: How a feature is metered: fixed at creation (its counters' units and meaning
#: depend on them).
METER_FIELDS = ("scale", "aggregation", "event_type", "value_property", "meter_filters")


def term_columns(term: Term | None, anchor: datetime | None) -> dict[str, Any]:
    """The entitlement columns that hold a term and its anchor."""
    if term is None or anchor is None:
        return {"term_months": None, "term_micros": None, "term_anchor": None}
    micros = term.length // timedelta(microseconds=1)
    return {
        "term_months": term.months or None,
        "term_micros": micros or None,
        "term_anchor": anchor,
    }


def _term_of(spec: NewEntitlement) -> Term | None:
    """The term an entitlement renews by (only auto-renewing ones need one)."""
    if not spec.auto_renew:
        return None
    if spec.term is not None:
        return _renewing(spec.term)
    if spec.ends_at is None:
        raise CatalogError("an auto-renewing entitlement needs ends_at (or a term) to renew by")
    return _renewing(Term.between(spec.starts_at, spec.ends_at))


def _renewing(term: Term) -> Term:
    """``term``, if an entitlement may renew by it: at least ``MIN_RENEWING_TERM``."""
    if not term.months and term.length < MIN_RENEWING_TERM:
        raise CatalogError(
            "an auto-renewing entitlement's term (starts_at to ends_at, or term_value and"
            f" term_unit) must be at least {MIN_RENEWING_TERM // timedelta(hours=1)} hour:"
            " each term opens a period"
        )
    return term


class Catalog:
    def __init__(
        self,
        organisations: OrganisationStore,
        features: FeatureStore,
        entitlements: EntitlementStore,
        plans: PlanStore,
        transitions: TransitionStore,
        resolution: ResolutionCache,
        meter_versions: MeterVersions,
    ) -> None:
        self.organisations = organisations
        self.features = features
        self.entitlements = entitlements
        self.plans = plans
        self.transitions = transitions
        self.resolution = resolution
        self.meter_versions = meter_versions

    def create_org(self, org_id: str, name: str | None, now: datetime) -> None:
        if not ORG_ID_PATTERN.match(org_id):
            raise CatalogError("org id must be 1-64 characters of A-Z a-z 0-9 _ . -")
        self.organisations.ensure(org_id, name or org_id, now)

    # -- features -------------------------------------------------------------------

    def feature(self, org: str, key: str) -> Feature:
        return self.features.by_key(org, key)

    def features_of(self, org: str) -> list[Feature]:
        return self.features.all_of(org)

    def change_feature(self, org: str, key: str, values: dict[str, Any]) -> Feature:
        """Rename, describe, or retire (``is_active``) a feature. How it is metered
        (``METER_FIELDS``) is fixed: given, each must be what is stored (a change is
        refused; a value equal to the stored one changes nothing)."""
        if not values:
            raise CatalogError("nothing to change")
        values = dict(values)
        metered = {name: values.pop(name) for name in METER_FIELDS if name in values}
        if metered:
            self._refuse_meter_change(self.features.by_key(org, key), metered)
            if not values:
                return self.features.by_key(org, key)
        return self.features.update(org, key, values)

    @staticmethod
    def _refuse_meter_change(feature: Feature, given: dict[str, Any]) -> None:
        changed = [
            name
            for name, value in given.items()
            if _meter_value(name, value) != _meter_value(name, getattr(feature, name))
        ]
        if changed:
            raise CatalogError(
                f"{', '.join(changed)} of feature {feature.key!r} cannot change: how a"
                " feature is metered is fixed at creation (its counters depend on it);"
                " create a new feature to change how it is metered"
            )

    def create_feature(
        self,
        org: str,
        key: str,
        *,
        now: datetime,
        name: str | None = None,
        type: FeatureType = FeatureType.FEATURE,
        units: str = "",
        description: str = "",
        product_id: uuid.UUID | None = None,
        scale: int = 6,
        aggregation: Aggregation | str = Aggregation.SUM,
        event_type: str | None = None,
        value_property: str | None = None,
        meter_filters: Mapping[str, Any] | None = None,
    ) -> Feature:
        """A feature, metered as ``meterd.meters.check_meter`` allows (a definition
        that cannot be counted is refused with the reason)."""
        if not FEATURE_KEY_PATTERN.match(key):
            raise CatalogError("feature key must be 1-64 characters of A-Z a-z 0-9 _ . -")
        meter = check_meter(
            feature=key,
            aggregation=str(aggregation),
            scale=scale,
            event_type=event_type,
            value_property=value_property,
            filters=meter_filters,
        )
        feature = self.features.add(
            Feature(
                org_id=org,
                key=key,
                name=name or key,
                description=description,
                type=type.value,
                units=units,
                product_id=product_id,
                is_active=True,
                created_at=now,
                scale=meter.scale,
                aggregation=meter.aggregation.value,
                event_type=meter.event_type,
                value_property=path_text(meter.value_property) if meter.value_property else None,
                meter_filters=dict(meter.filters) if meter.filters else None,
            )
        )
        # After the commit, so a worker that reads the new version finds the meter.
        # If Redis cannot be reached the error goes to the caller (as for the
        # resolution refresh after a grant) and the feature stands: workers find
        # its meter at once for events naming it, and otherwise within the 10 s
        # their kept list lasts.
        self.meter_versions.bump(org)
        return feature

    def check_grant(self, feature: Feature, **quantities: Decimal | None) -> None:
        """Each quantity given (by its field name) fits ``feature``'s scale: no more
        fractional digits than it counts, within what a counter at that scale holds
        exactly (``quantity.check_scaled``)."""
        for name, value in quantities.items():
            if value is None or value is UNSET:
                continue
            try:
                check_scaled(value, feature.scale, name)
            except QuantityError as exc:
                # Too many fractional digits is reported as "quantity ...": name the field.
                if str(exc).startswith(f"{name} "):
                    raise
                raise QuantityError(f"{name}: {exc}") from None

    def create_entitlement(self, spec: NewEntitlement, now: datetime) -> Entitlement:
        if spec.quantity is not None and spec.quantity < 0:
            raise CatalogError("quantity must not be negative")
        if spec.ends_at is not None and spec.ends_at <= spec.starts_at:
            raise CatalogError("ends_at must be after starts_at")
        if len(spec.customer_id) > 128 or not spec.customer_id:
            raise CatalogError("customer_id must be 1-128 characters")
        if spec.auto_renew and spec.billing_type is BillingType.PAY_PER_USE:
            raise CatalogError(
                "a PAY_PER_USE entitlement counts per calendar month and cannot auto-renew; "
                "leave ends_at open or extend it"
            )
        term = _term_of(spec)
        ends_at = spec.ends_at
        if term is not None and ends_at is None:
            ends_at = term.start(spec.starts_at, 1)
        feature = self.features.by_key(spec.org, spec.feature)
        self.check_grant(
            feature,
            quantity=spec.quantity,
            renewal_quantity=spec.renewal_quantity,
            allotment=spec.allotment,
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
        return self.entitlements.get(ent.id)

    def create_plan(self, spec: NewPlan, now: datetime) -> Plan:
        if spec.quantity is not None and spec.quantity < 0:
            raise CatalogError("quantity must not be negative")
        if (spec.term_value is None) != (spec.term_unit is None):
            raise CatalogError("give term_value and term_unit together (or neither)")
        if spec.term_value is not None and spec.term_value <= 0:
            raise CatalogError("term_value must be positive")
        if spec.auto_renew and spec.term_unit is None:
            raise CatalogError("an auto-renewing plan needs a term")
        if spec.auto_renew and spec.billing_type is BillingType.PAY_PER_USE:
            raise CatalogError("a PAY_PER_USE plan counts per calendar month and cannot auto-renew")
        if not FEATURE_KEY_PATTERN.match(spec.key):
            raise CatalogError("plan key must be 1-64 characters of A-Z a-z 0-9 _ . -")
        feature = self.features.by_key(spec.org, spec.feature)
        self.check_grant(feature, quantity=spec.quantity, renewal_quantity=spec.renewal_quantity)
        plan = Plan(
            org_id=spec.org,
            key=spec.key,
            display_name=spec.display_name or spec.key,
            description=spec.description,
            feature_id=feature.id,
            quantity=spec.quantity,
            billing_type=spec.billing_type.value,
            contract_mode=spec.contract_mode.value,
            term_value=spec.term_value,
            term_unit=spec.term_unit.value if spec.term_unit else None,
            term_kind=int(term_kind(spec.term_unit, spec.auto_renew, spec.contract_mode)),
            condition_family=int(
                condition_family(spec.quantity, spec.billing_type, spec.contract_mode)
            ),
            grace_days=spec.grace_days,
            auto_renew=spec.auto_renew,
            renewal_quantity=spec.renewal_quantity,
            is_active=True,
            row_version=1,
            created_at=now,
            updated_at=now,
        )
        for key in spec.families:
            if not FEATURE_KEY_PATTERN.match(key):
                raise CatalogError("plan family keys must be 1-64 characters of A-Z a-z 0-9 _ . -")
        return self.plans.add(plan, spec.families)

    def plan(self, org: str, plan_id: uuid.UUID) -> Plan:
        return self.plans.get(org, plan_id)

    def plans_of(self, org: str) -> list[Plan]:
        return self.plans.all_of(org)

    def change_plan(
        self, org: str, plan_id: uuid.UUID, expected_version: int, values: dict[str, Any]
    ) -> Plan:
        """Display fields and ``is_active`` (a retired plan makes no new entitlements),
        if the plan is still at ``expected_version``."""
        if not values:
            raise CatalogError("nothing to change")
        return self.plans.update(org, plan_id, expected_version, values)

    def entitlement_from_plan(
        self,
        org: str,
        plan_id: uuid.UUID,
        customer_id: str,
        starts_at: datetime,
        now: datetime,
        *,
        contract_id: str | None = None,
        priority: int = 0,
        filters: Mapping[str, Any] | None = None,
    ) -> Entitlement:
        """An entitlement with the plan's feature, quantity, term, grace and renewal
        (plans carry no dimensions: ``filters`` gives the entitlement's, if any)."""
        plan = self.plans.get(org, plan_id)
        if not plan.is_active:
            raise CatalogError(f"plan {plan.key} is retired: no new entitlements from it")
        unit = TermUnit(plan.term_unit) if plan.term_unit else None
        return self.create_entitlement(
            NewEntitlement(
                org=org,
                customer_id=customer_id,
                feature=self.plans.feature_key(plan),
                quantity=plan.quantity,
                starts_at=starts_at,
                ends_at=term_end(starts_at, plan.term_value, unit),
                billing_type=BillingType(plan.billing_type),
                contract_mode=ContractMode(plan.contract_mode),
                priority=priority,
                grace=timedelta(days=plan.grace_days) if plan.grace_days else None,
                auto_renew=plan.auto_renew,
                renewal_quantity=plan.renewal_quantity,
                contract_id=contract_id,
                plan_id=plan.id,
                filters=filters,
            ),
            now,
        )

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
            self.check_grant(
                scaled,
                quantity=change.quantity,
                renewal_quantity=change.renewal_quantity,
                allotment=change.allotment,
            )
            values, period = _changed_values(ent, change)
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
    ) -> Entitlement:
        """Suspend, resume or terminate an entitlement (see
        ``meterd.lifecycle.operator_transition``), recorded in the audit trail with a
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
        self.resolution.refresh([(ent.org_id, ent.customer_id, feature)], now)
        return ent

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


_INVALID = object()


def _meter_value(name: str, value: Any) -> Any:
    """A meter field's value in its stored form, to compare (``_INVALID`` if it is
    not one: never equal to a stored value)."""
    if value is None:
        return None
    try:
        if name == "value_property":
            return path_text(parse_path(value, name))
        if name == "meter_filters":
            checked = check_dimensions(value, name)
            return json.dumps(checked, sort_keys=True) if checked else None
    except InvalidError:
        return _INVALID
    if name == "scale":
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    return str(value)


def _dimensions(filters: Mapping[str, Any] | None) -> str | None:
    """Dimensions in a comparable form (``1`` is not ``true``; {} is none)."""
    checked = check_dimensions(filters, "filters") if filters is not None else None
    return json.dumps(checked, sort_keys=True) if checked else None


def _changed_values(
    ent: Entitlement, change: EntitlementChange
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(entitlement columns, current period columns) a change sets."""
    values: dict[str, Any] = {}
    period: dict[str, Any] = {}
    if change.quantity is not UNSET:
        if change.quantity is not None and change.quantity < 0:
            raise CatalogError("quantity must not be negative")
        values["quantity"] = period["quantity"] = change.quantity
    if change.renewal_quantity is not UNSET:
        values["renewal_quantity"] = change.renewal_quantity
    if change.priority is not None:
        values["priority"] = change.priority
    if change.contract_mode is not None:
        values["contract_mode"] = change.contract_mode.value
    if change.allotment is not UNSET:
        values["allotment"] = change.allotment
    if change.attributes is not UNSET:
        values["attributes"] = dict(change.attributes)
    if change.filters is not UNSET and _dimensions(change.filters) != _dimensions(ent.filters):
        raise CatalogError(
            "filters (dimensions) of an entitlement are fixed at creation: terminate it"
            " and create another to count other usage"
        )
    if change.auto_renew is not None:
        values.update(_auto_renew_values(ent, change.auto_renew))
    if change.ends_at is not UNSET:
        values.update(_end_values(ent, change.ends_at, values.get("auto_renew", ent.auto_renew)))
    if not values:
        raise CatalogError("nothing to change")
    return values, period


def _auto_renew_values(ent: Entitlement, auto_renew: bool) -> dict[str, Any]:
    """Turning auto-renew off ends the entitlement with its current term (the
    recorded end, once settled); turning it on renews by the term it had, else by
    its first term (start to end)."""
    if not auto_renew:
        return {"auto_renew": False}
    if ent.billing_type == BillingType.PAY_PER_USE.value:
        raise CatalogError("a PAY_PER_USE entitlement counts per calendar month and cannot renew")
    if ent.term_anchor is not None:
        return {"auto_renew": True}
    if ent.ends_at is None:
        raise CatalogError("give the entitlement an end first: its term runs from start to end")
    return {
        "auto_renew": True,
        **term_columns(_renewing(Term.between(ent.starts_at, ent.ends_at)), ent.starts_at),
    }


def _end_values(ent: Entitlement, ends_at: datetime | None, renewing: bool) -> dict[str, Any]:
    if renewing and ent.contract_mode != ContractMode.TRIAL.value:
        raise CatalogError(
            "an auto-renewing entitlement ends with its terms on the calendar; "
            "turn auto_renew off to end it, or change its term"
        )
    if ends_at is not None and ends_at <= ent.starts_at:
        raise CatalogError("ends_at must be after starts_at")
    if ent.ends_at is None:
        return {"ends_at": ends_at, "grace_until": None}
    new_end, grace_until = extend_term(ent.ends_at, ent.grace_until, ends_at)
    return {"ends_at": new_end, "grace_until": grace_until}


@dataclass(frozen=True, slots=True)
class OrgInfo:
    id: str
    name: str
    created_at: datetime


def organisations_of(catalog: Catalog) -> list[OrgInfo]:
    """Every organisation, by id."""
    return [OrgInfo(o.id, o.name, o.created_at) for o in catalog.organisations.all()]
