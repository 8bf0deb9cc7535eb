"""The rows services hand to the edges (API, CLI), named in one place.

They are the storage layer's mapped classes, returned detached from their
session: the edges read and format them, never query through them. The API
imports them from here, so ``api/`` depends on the services' contract and
never on ``storage/`` (an import-linter contract in pyproject.toml holds it).
"""

from __future__ import annotations

from meterd.storage.models import (
    ApiKey,
    Entitlement,
    EntitlementTransition,
    Feature,
    Plan,
    PlanFamily,
    UsagePeriod,
)

__all__ = [
    "ApiKey",
    "Entitlement",
    "EntitlementTransition",
    "Feature",
    "Plan",
    "PlanFamily",
    "UsagePeriod",
]
