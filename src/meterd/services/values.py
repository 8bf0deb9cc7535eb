"""The values services hand to the edges (API, CLI): frozen copies of what the
catalog and the read side found, detached from any session.

An edge reads and formats them; it cannot query through them, change them, or
trigger a lazy load after its session closed. Each carries every field the edges
read (a plan its families), so nothing is loaded behind the caller's back.

This module imports nothing of storage: ``from_row`` reads the row's attributes
by the value's field names, so a mapped row, a result row or a test double with
those names converts alike. Keeping it a leaf is what lets the import-linter
contracts in pyproject.toml say that ``api/`` sees values, never mapped classes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Self


def _fields_of(cls: type[Any], row: object, **given: Any) -> dict[str, Any]:
    """The value's fields read from ``row`` by name (``given`` overrides)."""
    return {f.name: given[f.name] if f.name in given else getattr(row, f.name) for f in fields(cls)}


def _copy(mapping: dict[str, Any] | None) -> dict[str, Any] | None:
    """A JSON column's object, detached from the row (None stays None)."""
    return None if mapping is None else dict(mapping)


@dataclass(frozen=True, slots=True)
class Feature:
    """A feature and how it is metered (``scale`` to ``meter_filters``)."""

    id: uuid.UUID
    org_id: str
    key: str
    name: str
    description: str
    type: str
    units: str
    product_id: uuid.UUID | None
    is_active: bool
    created_at: datetime
    scale: int
    aggregation: str
    event_type: str | None
    value_property: str | None
    meter_filters: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Any) -> Self:
        return cls(**_fields_of(cls, row, meter_filters=_copy(row.meter_filters)))


@dataclass(frozen=True, slots=True)
class PlanFamily:
    id: uuid.UUID
    org_id: str
    key: str
    display_name: str
    description: str
    sort_order: int
    is_active: bool

    @classmethod
    def from_row(cls, row: Any) -> Self:
        return cls(**_fields_of(cls, row))


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan with its families (in their sort order)."""

    id: uuid.UUID
    org_id: str
    key: str
    display_name: str
    description: str
    feature_id: uuid.UUID
    quantity: Decimal | None
    billing_type: str
    contract_mode: str
    term_value: int | None
    term_unit: str | None
    term_kind: int
    condition_family: int
    grace_days: int
    auto_renew: bool
    renewal_quantity: Decimal | None
    #: Rollover of its entitlements (None reads as 0).
    rollover_max: Decimal | None
    rollover_min: Decimal | None
    is_active: bool
    row_version: int
    created_at: datetime
    updated_at: datetime
    families: tuple[PlanFamily, ...]

    @classmethod
    def from_row(cls, row: Any) -> Self:
        families = tuple(PlanFamily.from_row(f) for f in row.families)
        return cls(**_fields_of(cls, row, families=families))


@dataclass(frozen=True, slots=True)
class Entitlement:
    """An entitlement as recorded (its ``status`` is the recorded one; the state at
    an instant is the ``Balance`` read beside it)."""

    id: uuid.UUID
    org_id: str
    number: int
    customer_id: str
    feature_id: uuid.UUID
    plan_id: uuid.UUID | None
    contract_id: str | None
    quantity: Decimal | None
    billing_type: str
    contract_mode: str
    status: str
    priority: int
    starts_at: datetime
    ends_at: datetime | None
    grace_until: datetime | None
    issued_at: datetime
    auto_renew: bool
    renewal_quantity: Decimal | None
    parent_id: uuid.UUID | None
    allotment: Decimal | None
    row_version: int
    created_at: datetime
    updated_at: datetime
    next_period_at: datetime | None
    term_months: int | None
    term_micros: int | None
    term_anchor: datetime | None
    terminated_at: datetime | None
    #: The tenant page's own fields.
    attributes: dict[str, Any]
    #: Dimensions (None: all usage of the feature).
    filters: dict[str, Any] | None
    #: Rollover (``meterd.core.rollover``; None reads as 0).
    rollover_max: Decimal | None = None
    rollover_min: Decimal | None = None

    @classmethod
    def from_row(cls, row: Any) -> Self:
        return cls(
            **_fields_of(
                cls, row, attributes=dict(row.attributes or {}), filters=_copy(row.filters)
            )
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of an entitlement's audit trail."""

    id: uuid.UUID
    entitlement_id: uuid.UUID
    from_status: str
    to_status: str
    at: datetime
    recorded_at: datetime
    reason: str
    job_run_id: str

    @classmethod
    def from_row(cls, row: Any) -> Self:
        return cls(**_fields_of(cls, row))


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    """A customer of an org (named by at least one of its entitlements)."""

    customer_id: str
    #: How many entitlements name it, whatever their state.
    entitlements: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event (or a raw message) that was not counted, with why."""

    id: uuid.UUID
    org_id: str | None
    reason: str
    detail: str
    source: str | None
    event_id: str | None
    payload: str
    received_at: datetime
    replayed_at: datetime | None
    replay_outcome: str | None

    @classmethod
    def from_row(cls, row: Any) -> Self:
        return cls(**_fields_of(cls, row))
