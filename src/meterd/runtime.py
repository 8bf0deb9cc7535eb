"""The composition root: builds the stores and services from settings, once per process.

Edges (Celery tasks, CLI, API) ask ``get_runtime()`` for what they need; tests
build a ``Runtime`` around fakeredis or a real server. Celery workers fork, so
the runtime is created lazily in each child, never inherited. Each service is
handed only the stores it uses.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

import redis
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from meterd import embedded
from meterd.config import Settings, get_settings
from meterd.core.redis_keys import RedisKeys
from meterd.services.alert_rules import AlertRuleService
from meterd.services.allotments import AllotmentService
from meterd.services.api_keys import ApiKeyService, RateLimiter
from meterd.services.backfill import BACKFILL_HORIZON, BackfillService
from meterd.services.balance import BalanceService
from meterd.services.catalog import Catalog
from meterd.services.compat_queries import CompatQueries
from meterd.services.corrections import CorrectionService
from meterd.services.counting import UsageCounter
from meterd.services.customers import CustomerList
from meterd.services.event_log import EventLogMaintenance
from meterd.services.flush import FlushService
from meterd.services.holds import HoldService
from meterd.services.ingest import IngestService
from meterd.services.intake import EventIntake
from meterd.services.lifecycle import LifecycleService
from meterd.services.meters import MeterCatalog
from meterd.services.notify import HttpWebhookSender, NotificationService
from meterd.services.portal_tokens import PortalTokens
from meterd.services.portal_view import PortalView
from meterd.services.queries import EntitlementQueries
from meterd.services.replay import DeadLetterReplay
from meterd.services.reserve import ReserveService
from meterd.services.resolution import ResolutionCache
from meterd.services.rollover import RolloverFinaliser
from meterd.services.usage_report import UsageReport
from meterd.services.values import Feature
from meterd.storage.allotments import AllotmentStore
from meterd.storage.api_keys import ApiKeyStore
from meterd.storage.backfill import BackfillStore
from meterd.storage.compat_listing import CompatListing
from meterd.storage.corrections import CorrectionCounters, CorrectionLog
from meterd.storage.counters import CounterStore
from meterd.storage.customers import CustomerDirectory
from meterd.storage.database import Database
from meterd.storage.dead_letters import DeadLetterStore
from meterd.storage.entitlements import EntitlementStore
from meterd.storage.event_log import EventLog
from meterd.storage.features import FeatureStore
from meterd.storage.holds import HoldStore
from meterd.storage.listing import EntitlementListing
from meterd.storage.meter_versions import MeterVersions
from meterd.storage.meters import MeterStore
from meterd.storage.notifications import NotificationStore
from meterd.storage.organisations import OrganisationStore
from meterd.storage.plans import PlanStore
from meterd.storage.portal_keys import PortalKeyStore
from meterd.storage.rate_limits import RateLimitStore
from meterd.storage.resolution_views import ResolutionViewStore
from meterd.storage.rollover import RolloverStore
from meterd.storage.stats import StatsStore
from meterd.storage.transitions import TransitionStore
from meterd.storage.usage import UsageStore

#: Errors the drivers raise when a store fails to answer. The edges treat them like
#: ``meterd.core.errors.UnavailableError``: the tasks retry them with backoff, the API
#: answers 503 with Retry-After.
STORE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, DBAPIError, PoolTimeoutError)


def redis_client_for(settings: Settings) -> redis.Redis:
    url = settings.redis_url
    if settings.is_embedded_redis:
        url = embedded.ensure_running(url)
    return redis.Redis.from_url(url, socket_timeout=30, health_check_interval=30)


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    database: Database

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(
            settings=settings,
            redis=redis_client_for(settings),
            database=Database.connect(settings.database_url),
        )

    @property
    def late_window(self) -> timedelta:
        return timedelta(seconds=self.settings.late_window)

    # -- stores ---------------------------------------------------------------------

    @cached_property
    def redis_keys(self) -> RedisKeys:
        return RedisKeys(self.settings.redis_prefix)

    @cached_property
    def counters(self) -> CounterStore:
        return CounterStore(
            self.redis,
            self.redis_keys,
            hot_window=timedelta(seconds=self.settings.dedupe_ttl),
            late_window=self.late_window,
            future_skew=timedelta(seconds=self.settings.future_skew),
            max_waiting_events=self.settings.max_waiting_events,
        )

    @cached_property
    def meters(self) -> MeterCatalog:
        return MeterCatalog(
            MeterStore(self.database.sessions).meters_of, version=self.meter_versions.current
        )

    @cached_property
    def meter_versions(self) -> MeterVersions:
        return MeterVersions(self.redis, self.redis_keys)

    @cached_property
    def stats(self) -> StatsStore:
        return StatsStore(self.redis, self.redis_keys)

    @cached_property
    def organisations(self) -> OrganisationStore:
        return OrganisationStore(self.database.sessions)

    @cached_property
    def features(self) -> FeatureStore:
        return FeatureStore(self.database.sessions)

    @cached_property
    def entitlements(self) -> EntitlementStore:
        return EntitlementStore(self.database.sessions)

    @cached_property
    def plans(self) -> PlanStore:
        return PlanStore(self.database.sessions)

    @cached_property
    def transitions(self) -> TransitionStore:
        return TransitionStore(self.database.sessions, late_window=self.late_window)

    @cached_property
    def resolution_views(self) -> ResolutionViewStore:
        return ResolutionViewStore(self.database.sessions)

    @cached_property
    def event_log(self) -> EventLog:
        return EventLog(self.database.sessions, self.database.dialect)

    @cached_property
    def usage(self) -> UsageStore:
        return UsageStore(self.database.sessions, self.event_log)

    @cached_property
    def listing(self) -> EntitlementListing:
        return EntitlementListing(self.database.sessions)

    @cached_property
    def compat_listing(self) -> CompatListing:
        return CompatListing(self.database.sessions)

    @cached_property
    def customers(self) -> CustomerList:
        return CustomerList(CustomerDirectory(self.database.sessions))

    @cached_property
    def dead_letters(self) -> DeadLetterStore:
        return DeadLetterStore(self.database.sessions)

    @cached_property
    def notification_store(self) -> NotificationStore:
        return NotificationStore(self.database.sessions)

    # -- services -------------------------------------------------------------------

    @cached_property
    def resolution(self) -> ResolutionCache:
        return ResolutionCache(
            self.counters,
            self.resolution_views,
            ttl_seconds=self.settings.resolution_ttl,
            late_window=self.late_window,
        )

    @cached_property
    def counting(self) -> UsageCounter:
        return UsageCounter(self.counters, self.resolution, self.event_log)

    @cached_property
    def ingest(self) -> IngestService:
        return IngestService(
            self.counting,
            self.dead_letters,
            self.meters,
            chunk_size=self.settings.batch_size,
            late_window=self.late_window,
            future_skew=timedelta(seconds=self.settings.future_skew),
        )

    @cached_property
    def backfill(self) -> BackfillService:
        """Backfill: closed periods in SQL, open ones through ``ingest.lua`` with a late
        window of ``BACKFILL_HORIZON`` (its own counter store; same Redis and keys)."""
        counters = CounterStore(
            self.redis,
            self.redis_keys,
            hot_window=timedelta(seconds=self.settings.dedupe_ttl),
            late_window=BACKFILL_HORIZON,
            future_skew=timedelta(seconds=self.settings.future_skew),
            max_waiting_events=self.settings.max_waiting_events,
        )
        return BackfillService(
            BackfillStore(self.database.sessions, self.event_log),
            UsageCounter(counters, self.resolution, self.event_log),
            self.event_log,
            self.dead_letters,
            self.meters,
            late_window=self.late_window,
            future_skew=timedelta(seconds=self.settings.future_skew),
        )

    @cached_property
    def intake(self) -> EventIntake:
        return EventIntake(
            self.dead_letters,
            future_skew=timedelta(seconds=self.settings.future_skew),
            late_window=self.late_window,
        )

    @cached_property
    def reserve(self) -> ReserveService:
        return ReserveService(self.counting, self.meters)

    @cached_property
    def hold_store(self) -> HoldStore:
        return HoldStore(self.redis, self.redis_keys)

    @cached_property
    def holds(self) -> HoldService:
        return HoldService(self.reserve, self.counting, self.hold_store)

    @cached_property
    def alert_rules(self) -> AlertRuleService:
        return AlertRuleService.over(self.database.sessions, self.features, self.resolution)

    @cached_property
    def corrections(self) -> CorrectionService:
        return CorrectionService(
            CorrectionCounters(self.redis, self.redis_keys, late_window=self.late_window),
            CorrectionLog(self.database.sessions),
            self.usage,
            self.resolution,
            self.meters,
            late_window=self.late_window,
            retention=timedelta(seconds=self.settings.retention_seconds),
        )

    @cached_property
    def replay(self) -> DeadLetterReplay:
        return DeadLetterReplay(self.dead_letters, self.ingest)

    @cached_property
    def flush(self) -> FlushService:
        return FlushService(self.counters, self.usage)

    @cached_property
    def balance(self) -> BalanceService:
        return BalanceService(
            self.counters,
            self.usage,
            self.resolution_views,
            late_window=self.late_window,
            future_skew=timedelta(seconds=self.settings.future_skew),
            resolution=self.resolution,
            holds=self.hold_store,
        )

    @cached_property
    def lifecycle(self) -> LifecycleService:
        return LifecycleService(
            self.transitions,
            RolloverFinaliser(RolloverStore(self.database.sessions), self.balance.unflushed_since),
            # built when a child is terminated, not before (it needs Redis)
            on_terminated=lambda ids, now: self.allotments.children_ended(ids, now),
        )

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(
            self.organisations,
            self.features,
            self.entitlements,
            self.plans,
            self.transitions,
            self.resolution,
            self.meter_versions,
        )

    @cached_property
    def allotments(self) -> AllotmentService:
        return AllotmentService(
            AllotmentStore(self.database.sessions),
            self.entitlements,
            self.transitions,
            self.balance,
            self.hold_store,
            self.resolution,
        )

    @cached_property
    def queries(self) -> EntitlementQueries:
        return EntitlementQueries(
            self.listing, self.entitlements, self.usage, self.transitions, self.balance
        )

    @cached_property
    def portal_tokens(self) -> PortalTokens:
        return PortalTokens(PortalKeyStore(self.database.sessions), self.organisations.exists)

    @cached_property
    def portal_view(self) -> PortalView:
        def features_of(org: str) -> list[Feature]:
            return [Feature.from_row(row) for row in self.features.all_of(org)]

        return PortalView(self.queries, self.balance.value, features_of)

    @cached_property
    def compat_queries(self) -> CompatQueries:
        return CompatQueries(self.compat_listing, self.queries)

    @cached_property
    def event_log_maintenance(self) -> EventLogMaintenance:
        return EventLogMaintenance(
            self.event_log, retention=timedelta(seconds=self.settings.retention_seconds)
        )

    @cached_property
    def usage_report(self) -> UsageReport:
        return UsageReport(
            self.event_log, self.entitlements.filters_of, backfilled=self.backfill.store.page
        )

    @cached_property
    def notifications(self) -> NotificationService:
        return NotificationService(
            self.notification_store,
            HttpWebhookSender(
                self.settings.webhook_timeout,
                time.time,
                allow_private=self.settings.webhook_allow_private,
            ),
            max_attempts=self.settings.webhook_max_attempts,
            allow_private=self.settings.webhook_allow_private,
        )

    @cached_property
    def api_keys(self) -> ApiKeyService:
        return ApiKeyService(
            ApiKeyStore(self.database.sessions),
            default_rate=self.settings.api_rate_limit,
            default_burst=self.settings.api_burst,
        )

    @cached_property
    def rate_limits(self) -> RateLimitStore:
        return RateLimitStore(self.redis, self.redis_keys)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        return RateLimiter(self.rate_limits)

    def close(self) -> None:
        self.redis.close()
        self.database.dispose()


_lock = threading.Lock()
_runtime: Runtime | None = None
_runtime_pid: int | None = None


def get_runtime() -> Runtime:
    """This process's runtime (rebuilt after a fork: sockets must not be shared)."""
    global _runtime, _runtime_pid
    with _lock:
        if _runtime is None or _runtime_pid != os.getpid():
            _runtime = Runtime.from_settings(get_settings())
            _runtime_pid = os.getpid()
        return _runtime


def reset_runtime() -> None:
    global _runtime, _runtime_pid
    with _lock:
        if _runtime is not None and _runtime_pid == os.getpid():
            _runtime.close()
        _runtime = None
        _runtime_pid = None
