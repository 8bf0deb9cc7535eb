"""Is the counter Redis safe to count money in? Read from the server, never assumed.

Two settings are required; without them meterd refuses to start (unless
``METERD_UNSAFE_REDIS=1``):

* ``maxmemory-policy noeviction``. Any other policy lets Redis drop keys under
  memory pressure, the dedupe markers first (they carry a TTL): a redelivered
  batch then counts twice, and unflushed counts can vanish, without an error.
* AOF on (``appendonly yes``). Without it a restart of Redis loses every count
  not yet flushed into the database (RDB snapshots alone lose minutes).

``appendfsync`` only warns: ``always`` (docker-compose, the embedded server)
loses nothing; ``everysec`` can lose about the last second of acknowledged
counts when the *host* crashes, ``no`` up to the kernel's flush interval
(~30 s). A crash of redis-server alone loses nothing with either: the write
reaches the kernel before Redis answers.

How the settings are read: ``CONFIG GET``. Managed Redis often hides CONFIG
(renamed away: "unknown command"; an ACL without it: NOPERM). Then meterd
reads ``INFO memory`` (``maxmemory_policy``) and ``INFO persistence``
(``aof_enabled``), which most managed offers still answer. A setting that
neither answers is *unverified*, a problem like a wrong one, unless the
operator states they checked it (``METERD_REDIS_SAFETY_VERIFIED=1``); that
never excuses a setting meterd could read and found wrong.

fakeredis (the tests' in-process stand-in) answers neither CONFIG nor INFO and
loses everything with the process by design; it is accepted as a test double,
and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from meterd.core.errors import ConflictError

REQUIRED_POLICY = "noeviction"
_SETTINGS = ("maxmemory-policy", "appendonly", "appendfsync")

#: Where an unreadable setting is stated verified by the operator.
VERIFIED_SETTING = "METERD_REDIS_SAFETY_VERIFIED=1"
#: The setting that lets meterd run on an unsafe Redis anyway.
UNSAFE_SETTING = "METERD_UNSAFE_REDIS=1"

_FSYNC_WARNINGS = {
    "everysec": "appendfsync is everysec: a crash of the Redis host (not of redis-server "
    "alone) can lose about the last second of counts; set `appendfsync always` for zero loss",
    "no": "appendfsync is no: a crash of the Redis host can lose the counts of the last "
    "~30 s (the kernel's flush interval); set `appendfsync always` for zero loss",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One unsafe (or unverifiable) setting and exactly what to set."""

    setting: str
    found: str
    fix: str

    def __str__(self) -> str:
        return f"{self.setting} is {self.found}: {self.fix}"


@dataclass(frozen=True, slots=True)
class RedisSafety:
    """The verdict on one server: safe when there is no problem (warnings may remain)."""

    #: The server, without credentials ("127.0.0.1:6379 db 0", a socket path).
    server: str
    #: How the settings were read: "CONFIG GET", "INFO (...)", or "fakeredis (...)".
    source: str
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def safe(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        """One paragraph for a log line or an error message."""
        if self.safe:
            return f"the counter Redis at {self.server} is safe (read by {self.source})"
        listed = "; ".join(str(p) for p in self.problems)
        return (
            f"the counter Redis at {self.server} is not safe for counting "
            f"(read by {self.source}): {listed}"
        )


class UnsafeRedisError(ConflictError):
    """The counter Redis would lose or double counts; meterd does not start on it."""

    def __init__(self, report: RedisSafety) -> None:
        super().__init__(
            f"{report.describe()}. meterd refuses to start: fix the settings above, "
            f"or set {UNSAFE_SETTING} to run anyway (counts can then be lost or doubled)"
        )
        self.report = report


def enforce(report: RedisSafety, *, allow_unsafe: bool) -> None:
    """Raise ``UnsafeRedisError`` for an unsafe server, unless the operator allows it."""
    if not report.safe and not allow_unsafe:
        raise UnsafeRedisError(report)


def is_test_double(client: redis.Redis) -> bool:
    """fakeredis, which meterd's tests run on (not imported: it is a test dependency)."""
    return type(client).__module__.split(".")[0] == "fakeredis"


def check_redis(client: redis.Redis, *, operator_verified: bool = False) -> RedisSafety:
    """Read the server's settings and judge them. A server that does not answer
    raises the driver's error (``redis.ConnectionError``, ``TimeoutError``)."""
    server = _where(client)
    if is_test_double(client):
        return RedisSafety(server, "fakeredis (in-process test double, nothing to configure)")
    try:
        found = _config(client)
        source = "CONFIG GET"
    except redis.ResponseError as exc:  # renamed away, or NOPERM (a ResponseError too)
        found = dict.fromkeys(_SETTINGS)
        source = f"INFO, as CONFIG GET was refused ({_first_line(exc)})"
    if found["maxmemory-policy"] is None or found["appendonly"] is None:
        # CONFIG refused, or a proxy that answers it only in part.
        for name, value in _info(client).items():
            if found[name] is None and value is not None:
                found[name] = value
                if source == "CONFIG GET":
                    source = "CONFIG GET and INFO"
    return _judge(server, source, found, operator_verified)


def _config(client: redis.Redis) -> dict[str, str | None]:
    answer: dict[Any, Any] = {}
    for name in _SETTINGS:
        answer.update(client.config_get(name))
    values = {_text(k): _text(v) for k, v in answer.items()}
    return {name: values.get(name) for name in _SETTINGS}


def _info(client: redis.Redis) -> dict[str, str | None]:
    """The same settings from INFO; a section INFO does not answer leaves them None.
    INFO never tells ``appendfsync``."""
    found: dict[str, str | None] = dict.fromkeys(_SETTINGS)
    memory = _info_section(client, "memory")
    if "maxmemory_policy" in memory:
        found["maxmemory-policy"] = _text(memory["maxmemory_policy"])
    persistence = _info_section(client, "persistence")
    if "aof_enabled" in persistence:
        found["appendonly"] = "yes" if str(persistence["aof_enabled"]) == "1" else "no"
    return found


def _info_section(client: redis.Redis, section: str) -> dict[str, Any]:
    try:
        return dict(client.info(section))
    except redis.ResponseError:  # INFO hidden too
        return {}


#: What the counter Redis must be set to, and how to fix each (in the order reported).
_REQUIRED_SETTINGS = (
    (
        "maxmemory-policy",
        REQUIRED_POLICY,
        "set `maxmemory-policy noeviction` (CONFIG SET maxmemory-policy noeviction, "
        "and in redis.conf or the managed offer's parameters so a restart keeps it); "
        "an evicting Redis drops dedupe markers and counts redeliveries twice",
    ),
    (
        "appendonly",
        "yes",
        "set `appendonly yes` (CONFIG SET appendonly yes, and in redis.conf so a "
        "restart keeps it; `appendfsync always` for zero loss); without AOF a Redis "
        "restart loses every count not yet flushed to the database",
    ),
)


def _judge(
    server: str, source: str, found: dict[str, str | None], operator_verified: bool
) -> RedisSafety:
    problems: list[Problem] = []
    warnings: list[str] = []
    for setting, required, fix in _REQUIRED_SETTINGS:
        value = found[setting]
        if value is None:
            if operator_verified:
                warnings.append(_taken_on_trust(setting, required))
            else:
                problems.append(_unverified(setting, required))
        elif value != required:
            problems.append(Problem(setting, value, fix))
    aof = found["appendonly"]
    fsync = found["appendfsync"]
    if aof == "yes" and fsync in _FSYNC_WARNINGS:
        warnings.append(_FSYNC_WARNINGS[fsync])
    elif aof == "yes" and fsync is None:
        warnings.append(
            "appendfsync could not be read (INFO does not tell it): `always` loses nothing, "
            "`everysec` up to a second of counts on a host crash"
        )
    return RedisSafety(server, source, tuple(problems), tuple(warnings))


def _unverified(setting: str, required: str) -> Problem:
    return Problem(
        setting,
        "unknown (neither CONFIG GET nor INFO tells it)",
        f"make sure it is `{setting} {required}` (ask your Redis provider), "
        f"then set {VERIFIED_SETTING}",
    )


def _taken_on_trust(setting: str, required: str) -> str:
    return (
        f"{setting} could not be read; taken as `{required}` on the operator's word "
        f"({VERIFIED_SETTING})"
    )


def _where(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']} db {kwargs.get('db', 0)}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)} db {kwargs.get('db', 0)}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _first_line(exc: Exception) -> str:
    """ "unknown command 'CONFIG'" or the NOPERM sentence, without redis's echo of the args."""
    line = (str(exc).splitlines() or [type(exc).__name__])[0]
    return line.split(", with args beginning with")[0][:120]
