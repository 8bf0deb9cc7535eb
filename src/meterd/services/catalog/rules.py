"""What an entitlement may be: the specs of a new one and of a change, the term it
renews by, and the columns a change sets. Pure rules: no store, no clock."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from meterd.core.domain import Aggregation, BillingType, ContractMode
from meterd.core.lifecycle import MIN_RENEWING_TERM, extend_term
from meterd.core.meters import check_dimensions
from meterd.core.terms import Term, TermUnit
from meterd.services.catalog.base import UNSET, CatalogError
from meterd.storage.models import Entitlement

#: An entitlement's burn-down priority is within +-this: the column is a 32-bit
#: integer on PostgreSQL (the API's schema and the CLI's options say so too).
MAX_PRIORITY = 1_000_000
#: A term in years, at most (terms in months and days are bounded by ``term_value``
#: <= 10,000 at the edges already: 834 and 28 years), so every date meterd derives
#: from a body's date still falls before year 10000 (``meterd.api.inputs``).
MAX_TERM_YEARS = 900
#: What a plan gives an entitlement made from it (the API's names): given beside a
#: plan, they would be ignored, so they are refused (``check_from_plan``).
FROM_PLAN = (
    "feature",
    "quantity",
    "ends_at",
    "term_value",
    "term_unit",
    "auto_renew",
    "renewal_quantity",
    "billing_type",
    "contract_mode",
    "grace_days",
    "rollover_max",
    "rollover_min",
)


def check_priority(priority: int | None) -> None:
    """A priority the column holds on every backend (None: left as it is)."""
    if priority is not None and not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise CatalogError(f"priority must be from -{MAX_PRIORITY:,} to {MAX_PRIORITY:,}")


def check_term(value: int | None, unit: TermUnit | None) -> None:
    """A term in years is at most ``MAX_TERM_YEARS``."""
    if unit is TermUnit.YEAR and (value or 0) > MAX_TERM_YEARS:
        raise CatalogError(f"term_value: a term is at most {MAX_TERM_YEARS} years")


def check_from_plan(given: Iterable[str]) -> None:
    """Refuse what an edge was given beside a plan that the plan gives (``given``
    names them as the edge does: ``quantity`` at the API, ``--quantity`` at the CLI)."""
    names = list(given)
    if names:
        raise CatalogError(
            f"{', '.join(names)}: not taken with a plan, which gives the feature, quantity,"
            " end, term, renewal, billing type, contract mode, grace and rollover"
        )


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
    #: Rollover is fixed at creation too (``check_rollover_unchanged``).
    rollover_max: Decimal | None = UNSET
    rollover_min: Decimal | None = UNSET


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
    #: Dimensions (``meterd.core.meters.check_dimensions``): only usage whose ``data`` has
    #: these values counts on it. None or {}: all usage of the feature.
    filters: Mapping[str, Any] | None = None
    #: Rollover (``meterd.core.rollover``): a renewed term carries MIN(rollover_max,
    #: MAX(remaining of the term before, rollover_min)). None: nothing carries.
    rollover_max: Decimal | None = None
    rollover_min: Decimal | None = None


def check_new(spec: NewEntitlement) -> None:
    """Refuse a new entitlement whose own fields contradict each other."""
    if spec.quantity is not None and spec.quantity < 0:
        raise CatalogError("quantity must not be negative")
    check_priority(spec.priority)
    if spec.term is not None and spec.term.months > 12 * MAX_TERM_YEARS:
        raise CatalogError(f"term_value: a term is at most {MAX_TERM_YEARS} years")
    if spec.ends_at is not None and spec.ends_at <= spec.starts_at:
        raise CatalogError("ends_at must be after starts_at")
    if len(spec.customer_id) > 128 or not spec.customer_id:
        raise CatalogError("customer_id must be 1-128 characters")
    if spec.auto_renew and spec.billing_type is BillingType.PAY_PER_USE:
        raise CatalogError(
            "a PAY_PER_USE entitlement counts per calendar month and cannot auto-renew; "
            "leave ends_at open or extend it"
        )


def check_rollover(
    rollover_max: Decimal | None,
    rollover_min: Decimal | None,
    *,
    renews: bool,
    aggregation: Aggregation | None = None,
) -> None:
    """Rollover settings that mean something: ``0 <= rollover_min <= rollover_max``,
    on a grant that renews (a term to carry into; PRE_PAID then, as only those
    renew), of a feature whose consumption is a running total (``aggregation``
    when known: SUM or COUNT). A level (MAX, LATEST) has no remaining that could
    carry, and a UNIQUE_COUNT term counts its own set of values afresh."""
    if rollover_max is None and rollover_min is None:
        return
    if rollover_max is None:
        raise CatalogError(
            "rollover_min needs rollover_max: a term carries MIN(rollover_max,"
            " MAX(remaining, rollover_min)), which is 0 without a maximum"
        )
    if rollover_max < 0 or (rollover_min is not None and rollover_min < 0):
        raise CatalogError("rollover_max and rollover_min must not be negative")
    if rollover_min is not None and rollover_min > rollover_max:
        raise CatalogError("rollover_min must not be more than rollover_max")
    if not renews:
        raise CatalogError(
            "rollover needs a renewing grant (auto_renew with a term): only a renewed"
            " term takes what the term before left"
        )
    if aggregation is not None and aggregation not in (Aggregation.SUM, Aggregation.COUNT):
        raise CatalogError(
            f"rollover carries what a term left of a running total (SUM or COUNT);"
            f" this feature aggregates by {aggregation.value}, whose consumption is"
            + (
                " a set of values counted afresh each term"
                if aggregation is Aggregation.UNIQUE_COUNT
                else " a level, not a total"
            )
        )


def check_rollover_unchanged(ent: Entitlement, change: EntitlementChange) -> None:
    """Rollover is fixed at creation: a renewed term's carry follows every term
    before it, so changing the settings later would re-price terms that closed
    under the old ones. Given in a change, they must be the ones stored."""
    for name in ("rollover_max", "rollover_min"):
        given = getattr(change, name)
        if given is not UNSET and given != getattr(ent, name):
            raise CatalogError(
                f"{name} is fixed at creation (carries follow every term before them):"
                " create another entitlement to change how it rolls over"
            )


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


def term_of(spec: NewEntitlement) -> Term | None:
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


def _dimensions(filters: Mapping[str, Any] | None) -> str | None:
    """Dimensions in a comparable form (``1`` is not ``true``; {} is none)."""
    checked = check_dimensions(filters, "filters") if filters is not None else None
    return json.dumps(checked, sort_keys=True) if checked else None


def changed_values(
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
        check_priority(change.priority)
        values["priority"] = change.priority
    if change.contract_mode is not None:
        values["contract_mode"] = change.contract_mode.value
    if change.allotment is not UNSET:
        values["allotment"] = change.allotment
    if change.attributes is not UNSET:
        values["attributes"] = dict(change.attributes)
    check_rollover_unchanged(ent, change)
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
