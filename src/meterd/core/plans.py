"""Plans: templates for entitlements, and the derived shapes lists filter on.

The workspace seed API filters plans by "term kind", "term unit" and
"condition family" integers without defining them; meterd derives them from a
plan's own fields so they can never contradict it:

* ``TermKind``: 0 OPEN_ENDED (no term), 1 FIXED (a term, no renewal),
  2 RENEWING (a term with auto-renew), 3 TRIAL (a TRIAL contract with a term).
* ``TermUnit``: 0 DAY, 1 MONTH, 2 YEAR, 3 WEEK (with ``term_value``; see ``meterd.core.terms``).
* ``ConditionFamily``: 0 UNLIMITED (no quantity), 1 QUANTITY (a PRE_PAID
  quantity), 2 METERED (PAY_PER_USE), 3 TRIAL_QUANTITY (a TRIAL with a quantity).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import IntEnum

from meterd.core.domain import BillingType, ContractMode
from meterd.core.terms import Term, TermUnit

__all__ = ["ConditionFamily", "TermKind", "TermUnit", "condition_family", "term_end", "term_kind"]


class TermKind(IntEnum):
    OPEN_ENDED = 0
    FIXED = 1
    RENEWING = 2
    TRIAL = 3


class ConditionFamily(IntEnum):
    UNLIMITED = 0
    QUANTITY = 1
    METERED = 2
    TRIAL_QUANTITY = 3


def term_kind(
    term_unit: TermUnit | None, auto_renew: bool, contract_mode: ContractMode
) -> TermKind:
    if term_unit is None:
        return TermKind.OPEN_ENDED
    if contract_mode is ContractMode.TRIAL:
        return TermKind.TRIAL
    return TermKind.RENEWING if auto_renew else TermKind.FIXED


def condition_family(
    quantity: Decimal | None, billing_type: BillingType, contract_mode: ContractMode
) -> ConditionFamily:
    if billing_type is BillingType.PAY_PER_USE:
        return ConditionFamily.METERED
    if quantity is None:
        return ConditionFamily.UNLIMITED
    if contract_mode is ContractMode.TRIAL:
        return ConditionFamily.TRIAL_QUANTITY
    return ConditionFamily.QUANTITY


def term_end(starts_at: datetime, value: int | None, unit: TermUnit | None) -> datetime | None:
    """The end of a term of ``value`` ``unit``s from ``starts_at`` (None: open-ended)."""
    if unit is None or value is None:
        return None
    return Term.of(value, unit).start(starts_at, 1)
