"""SQLAlchemy 2.x tables. Alembic migrations in ``meterd/migrations`` create them.

One module per group of tables (``catalog``, ``entitlements``, ``event_rows``,
``backfill``, ``alerts``, ``webhooks``, ``allotments``, ``portal``), over the
declarative base and the exact column types (``base``); every name is re-exported
here, so ``Base.metadata`` holds every table once this package is imported.
"""

from meterd.storage.models.alerts import AlertRule
from meterd.storage.models.allotments import Allotment
from meterd.storage.models.backfill import (
    Backfill,
    BackfillBatch,
    BackfillLatest,
    BackfillLogRow,
    BackfillUniqueValue,
)
from meterd.storage.models.base import Base, ExactDecimal, UtcDateTime
from meterd.storage.models.catalog import (
    ApiKey,
    Feature,
    Organisation,
    Plan,
    PlanFamily,
    plan_family_links,
)
from meterd.storage.models.entitlements import (
    LAPSED_RENEWING_SQL,
    VOID_DUE_SQL,
    Entitlement,
    EntitlementTransition,
    Notification,
    UsagePeriod,
)
from meterd.storage.models.event_rows import (
    LOGGED_ID_LENGTH,
    DeadLetter,
    EventLogRow,
    FlushBatch,
    UsageRollup,
    compared_in_schema,
)
from meterd.storage.models.portal import PortalSigningKey
from meterd.storage.models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "LAPSED_RENEWING_SQL",
    "LOGGED_ID_LENGTH",
    "VOID_DUE_SQL",
    "AlertRule",
    "Allotment",
    "ApiKey",
    "Backfill",
    "BackfillBatch",
    "BackfillLatest",
    "BackfillLogRow",
    "BackfillUniqueValue",
    "Base",
    "DeadLetter",
    "Entitlement",
    "EntitlementTransition",
    "EventLogRow",
    "ExactDecimal",
    "Feature",
    "FlushBatch",
    "Notification",
    "Organisation",
    "Plan",
    "PlanFamily",
    "PortalSigningKey",
    "UsagePeriod",
    "UsageRollup",
    "UtcDateTime",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "compared_in_schema",
    "plan_family_links",
]
