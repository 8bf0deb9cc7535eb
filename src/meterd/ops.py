"""What operators watch: queue depths, flush lag, dead letters, throughput, workers.

``gather`` reads it all once (``meterd status`` and the metrics exporter use it).
Each part is read on its own, so a broker that does not answer leaves its
numbers empty (``None``) instead of failing the whole view.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from celery import Celery

from meterd.celery_config import QUEUES
from meterd.config import Settings
from meterd.core.redis_keys import RedisKeys
from meterd.core.timeutil import epoch_micros, utcnow
from meterd.logs import get_logger
from meterd.runtime import Runtime
from meterd.storage import data_format
from meterd.storage.data_format import DataFormat
from meterd.storage.data_format import claim as claim_data_format
from meterd.storage.redis_safety import Problem, RedisSafety, check_redis, enforce

log = get_logger("meterd.ops")


@dataclass(slots=True)
class QueueDepth:
    queue: str
    #: Messages waiting to be delivered.
    ready: int | None
    #: Delivered to a worker, not yet acknowledged (Redis broker; None over AMQP,
    #: where only the broker's management API knows).
    unacked: int | None


@dataclass(slots=True)
class Storage:
    """What the dedupe markers, the waiting events and the event log hold."""

    #: Markers in Redis (events accepted within the hot window), their sets, and
    #: Redis's MEMORY USAGE of them (sampled; None if the server does not say).
    markers: int | None = None
    marker_sets: int | None = None
    marker_bytes: int | None = None
    #: Accepted events waiting in Redis for a flush into the log.
    waiting_events: int | None = None
    #: Rows of the event log (PostgreSQL: the planner's estimate), its partitions,
    #: the oldest partition's day (or oldest event, SQLite), its bytes on disk.
    log_rows: int | None = None
    log_partitions: int | None = None
    log_oldest: str | None = None
    log_bytes: int | None = None


def storage_figures(runtime: Runtime) -> Storage:
    markers = runtime.counters.marker_figures()
    log = runtime.event_log.figures()
    return Storage(
        markers=markers.markers,
        marker_sets=markers.sets,
        marker_bytes=markers.bytes,
        waiting_events=runtime.counters.waiting_events(),
        log_rows=log.rows,
        log_partitions=log.partitions,
        log_oldest=log.oldest.isoformat() if log.oldest else None,
        log_bytes=log.bytes,
    )


#: States of the counter Redis's safety check (``RedisSafetyState.state``).
SAFE, UNSAFE, UNSAFE_ALLOWED, UNKNOWN = "safe", "unsafe", "unsafe_allowed", "unknown"


@dataclass(slots=True)
class RedisSafetyState:
    """The counter Redis's safety as /readyz, ``meterd status`` and metrics show it.

    ``state``: ``safe``; ``unsafe`` (meterd refuses to start on it: not ready);
    ``unsafe_allowed`` (``METERD_UNSAFE_REDIS=1``: ready, with the problems listed);
    ``unknown`` (Redis did not answer; the ping check says so too)."""

    state: str
    #: How the settings were read (CONFIG GET, INFO, fakeredis).
    source: str | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def redis_safety(runtime: Runtime) -> RedisSafetyState:
    """Check the counter Redis now (a few CONFIG GETs: cheap enough for every look)."""
    settings = runtime.settings
    try:
        report = check_redis(runtime.redis, operator_verified=settings.redis_safety_verified)
    except redis.RedisError as exc:
        return RedisSafetyState(UNKNOWN, warnings=[f"Redis did not answer: {exc}"[:300]])
    state = SAFE if report.safe else UNSAFE_ALLOWED if settings.unsafe_redis else UNSAFE
    return RedisSafetyState(state, report.source, list(report.problems), list(report.warnings))


@dataclass(slots=True)
class DataFormatState:
    """The data format as ``meterd status`` shows it: whether this version reads the
    stored format, and whether a drain with the version that wrote it is needed."""

    stored: int | None
    writes: int
    reads: list[int]
    drain_needed: bool
    summary: str
    #: What a refused start would say (None when this version can start).
    refusal: str | None = None


def data_format_state(runtime: Runtime) -> DataFormatState:
    found: DataFormat = data_format.inspect(runtime.redis, runtime.redis_keys)
    return DataFormatState(
        stored=found.stored,
        writes=found.writes,
        reads=list(found.reads),
        drain_needed=found.drain_needed,
        summary=found.describe(),
        refusal=found.refusal() if found.drain_needed else None,
    )


def refuse_unsafe_redis(
    client: redis.Redis, settings: Settings, *, who: str, wait_seconds: float = 0.0
) -> RedisSafety:
    """The check at the start of a worker, beat or API process.

    Raises ``UnsafeRedisError`` (its message says what to set) for an unsafe Redis
    unless ``METERD_UNSAFE_REDIS=1``, which logs a loud warning instead. A Redis that
    does not answer is retried for ``wait_seconds``, then its error is raised.
    Then the data format (``storage/data_format.py``): raises ``DataFormatError``
    (its message says how to drain) when the Redis holds data of a format this
    version does not read, else records this version's format."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            report = check_redis(client, operator_verified=settings.redis_safety_verified)
            break
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
    enforce(report, allow_unsafe=settings.unsafe_redis)
    if not report.safe:
        log.warning(
            "COUNTING ON AN UNSAFE REDIS: counts can be lost or doubled "
            "(started anyway: METERD_UNSAFE_REDIS=1)",
            process=who,
            redis=report.describe(),
        )
    for warning in report.warnings:
        log.warning("redis safety", process=who, warning=warning)
    found = claim_data_format(client, RedisKeys(settings.redis_prefix))
    if found.stored != found.writes or not found.recorded:
        log.info("redis data format", process=who, found=found.describe())
    return report


@dataclass(slots=True)
class Status:
    queues: list[QueueDepth]
    #: Seconds since the oldest write not yet in the database (None: all flushed).
    flush_lag_seconds: float | None
    dead_letters: dict[str, int]
    events_total: dict[str, int]
    #: Accepted events per second over the sample (None when not sampled).
    events_per_second: float | None
    workers: list[str] | None
    storage: Storage = field(default_factory=Storage)
    redis_safety: RedisSafetyState = field(default_factory=lambda: RedisSafetyState(UNKNOWN))
    #: The counter Redis's data format against this version's (None: not read).
    data_format: DataFormatState | None = None
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def queue_depths(app: Celery, queues: tuple[str, ...] = QUEUES) -> list[QueueDepth]:
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)  # a down broker fails fast
        channel: Any = conn.default_channel
        if hasattr(channel, "_size") and hasattr(channel, "unacked_key"):
            return _redis_depths(channel, queues)
        return [_amqp_depth(channel, q) for q in queues]


def _redis_depths(channel: Any, queues: tuple[str, ...]) -> list[QueueDepth]:
    with channel.conn_or_acquire() as client:
        unacked: Counter[str] = Counter()
        for raw in client.hvals(channel.unacked_key):
            try:
                unacked[json.loads(raw)[2]] += 1  # [message, exchange, routing key]
            except (ValueError, IndexError, TypeError):
                unacked["?"] += 1
    return [QueueDepth(q, int(channel._size(q)), unacked.get(q, 0)) for q in queues]


def _amqp_depth(channel: Any, queue: str) -> QueueDepth:
    from amqp.exceptions import ChannelError  # type: ignore[import-untyped]

    try:
        declared = channel.queue_declare(queue=queue, passive=True)
    except ChannelError:
        return QueueDepth(queue, 0, None)
    return QueueDepth(queue, int(declared.message_count), None)


def readiness(runtime: Runtime) -> dict[str, str]:
    """ "ok" or "down" for the database and for Redis (each checked on its own)."""
    checks = {}
    for name, ping in (("database", runtime.database.ping), ("redis", runtime.redis.ping)):
        try:
            ping()
            checks[name] = "ok"
        except Exception:
            checks[name] = "down"
    return checks


def flush_lag_seconds(runtime: Runtime) -> float | None:
    since = runtime.counters.flush_lag_since()
    if since is None:
        return None
    return max(0.0, (epoch_micros(utcnow()) - since) / 1_000_000)


def gather(
    runtime: Runtime, app: Celery, *, sample_seconds: float = 0.0, ping_timeout: float = 1.0
) -> Status:
    errors: list[str] = []

    def attempt(what: str, read: Any) -> Any:
        try:
            return read()
        except Exception as exc:
            errors.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
            return None

    events_before = attempt("events", runtime.stats.events) or {}
    started = time.monotonic()
    queues = attempt("queues", lambda: queue_depths(app)) or [
        QueueDepth(q, None, None) for q in QUEUES
    ]
    workers = attempt("workers", lambda: sorted(_ping(app, ping_timeout)))
    lag = attempt("flush lag", lambda: flush_lag_seconds(runtime))
    dead = attempt("dead letters", runtime.dead_letters.count_by_reason) or {}
    storage = attempt("storage", lambda: storage_figures(runtime)) or Storage()
    safety = redis_safety(runtime)
    formats = attempt("data format", lambda: data_format_state(runtime))
    rate = None
    if sample_seconds > 0:
        time.sleep(max(0.0, sample_seconds - (time.monotonic() - started)))
        events_after = attempt("events", runtime.stats.events) or {}
        elapsed = time.monotonic() - started
        accepted = events_after.get("accepted", 0) - events_before.get("accepted", 0)
        rate = accepted / elapsed if elapsed > 0 else None
        events_before = events_after
    return Status(
        queues=queues,
        flush_lag_seconds=lag,
        dead_letters=dead,
        events_total=events_before,
        events_per_second=rate,
        workers=workers,
        storage=storage,
        redis_safety=safety,
        data_format=formats,
        errors=errors,
    )


def _ping(app: Celery, timeout: float) -> list[str]:
    replies = app.control.ping(timeout=timeout) or []
    return [name for reply in replies for name in reply]
