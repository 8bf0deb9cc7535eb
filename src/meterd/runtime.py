"""The composition root: builds the stores and services from settings, once per process.

Edges (Celery tasks, CLI, API) ask ``get_runtime()`` for what they need; tests
build a ``Runtime`` around fakeredis or a real server. Celery workers fork, so
the runtime is created lazily in each child, never inherited.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

import redis

from meterd import embedded
from meterd.config import Settings, get_settings
from meterd.keys import Keys
from meterd.services.balance import BalanceService
from meterd.services.catalog import Catalog
from meterd.services.flush import FlushService
from meterd.services.ingest import IngestService
from meterd.services.keys import KeyService
from meterd.services.lifecycle import LifecycleService
from meterd.services.notify import HttpWebhookSender, NotificationService
from meterd.services.replay import DeadLetterReplay
from meterd.services.reserve import ReserveService
from meterd.services.resolution import ResolutionCache
from meterd.storage.api_keys import ApiKeyStore
from meterd.storage.counters import CounterStore
from meterd.storage.database import make_engine, make_session_factory
from meterd.storage.dead_letters import DeadLetterStore
from meterd.storage.notifications import NotificationStore
from meterd.storage.repository import SqlRepository
from meterd.storage.stats import StatsStore


def redis_client_for(settings: Settings) -> redis.Redis:
    url = settings.redis_url
    if settings.is_embedded_redis:
        url = embedded.ensure_running(url)
    return redis.Redis.from_url(url, socket_timeout=30, health_check_interval=30)


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    repository: SqlRepository

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url)
        return cls(
            settings=settings,
            redis=redis_client_for(settings),
            repository=SqlRepository(engine, make_session_factory(engine)),
        )

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.settings.redis_prefix)

    @cached_property
    def counters(self) -> CounterStore:
        return CounterStore(
            self.redis,
            self.keys,
            dedupe_ttl=timedelta(seconds=self.settings.dedupe_ttl),
            late_window=timedelta(seconds=self.settings.late_window),
        )

    @cached_property
    def resolution(self) -> ResolutionCache:
        return ResolutionCache(
            self.counters,
            self.repository,
            ttl_seconds=self.settings.resolution_ttl,
            late_window=timedelta(seconds=self.settings.late_window),
        )

    @cached_property
    def dead_letters(self) -> DeadLetterStore:
        return DeadLetterStore(self.repository.sessions)

    @cached_property
    def ingest(self) -> IngestService:
        return IngestService(
            self.counters,
            self.dead_letters,
            self.resolution,
            chunk_size=self.settings.batch_size,
            late_window=timedelta(seconds=self.settings.late_window),
            future_skew=timedelta(seconds=self.settings.future_skew),
        )

    @cached_property
    def lifecycle(self) -> LifecycleService:
        return LifecycleService(self.repository, self.resolution)

    @cached_property
    def replay(self) -> DeadLetterReplay:
        return DeadLetterReplay(self.dead_letters, self.ingest)

    @cached_property
    def flush(self) -> FlushService:
        return FlushService(self.counters, self.repository)

    @cached_property
    def balance(self) -> BalanceService:
        return BalanceService(
            self.counters,
            self.repository,
            late_window=timedelta(seconds=self.settings.late_window),
            resolution=self.resolution,
        )

    @cached_property
    def notification_store(self) -> NotificationStore:
        return NotificationStore(self.repository.sessions)

    @cached_property
    def notifications(self) -> NotificationService:
        return NotificationService(
            self.notification_store,
            HttpWebhookSender(self.settings.webhook_timeout, time.time),
            max_attempts=self.settings.webhook_max_attempts,
        )

    @cached_property
    def stats(self) -> StatsStore:
        return StatsStore(self.redis, self.keys)

    @cached_property
    def keys_service(self) -> KeyService:
        return KeyService(ApiKeyStore(self.repository.sessions))

    @cached_property
    def reserve(self) -> ReserveService:
        return ReserveService(self.counters, self.resolution)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.repository, self.resolution)

    def close(self) -> None:
        self.redis.close()
        self.repository.engine.dispose()


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
