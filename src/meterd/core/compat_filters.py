"""The seed pages' own filters, as typed values (no framework, no SQL): the edge
parses a page's query string into them, the compat listing maps them to columns.

The Zenskar-style filters that native routes share with the Zenskar page are in
``meterd.core.filters``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class WorkspaceFilters:
    """The workspace seed page's filters, parsed and typed (``api/compat/workspace.py``
    parses the query string; ``storage/compat_listing.py`` maps these to columns).
    Filters on the plan never match an entitlement without one."""

    plan_id: uuid.UUID | None = None
    plan_family_ids: tuple[uuid.UUID, ...] = ()
    condition_family: int | None = None
    term_kind: int | None = None
    term_value: int | None = None
    #: A ``meterd.core.plans.TermUnit`` value.
    term_unit: str | None = None
    auto_renew: bool | None = None
    model_id: uuid.UUID | None = None
    #: False when the page asked for an owner role meterd does not have (matches nothing).
    owner_role_matches: bool = True
    owner: str | None = None
    #: A ``meterd.core.domain.Status`` value; None: any.
    status: str | None = None
    #: A status code the page defines that no entitlement can have (matches nothing).
    status_matches_nothing: bool = False
    starts_from: datetime | None = None
    starts_to: datetime | None = None
    ends_from: datetime | None = None
    ends_to: datetime | None = None
    search: str | None = None
