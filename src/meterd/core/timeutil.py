"""Time helpers: UTC everywhere, exact integer microseconds, calendar months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def epoch_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (no float)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def month_start(moment: datetime) -> datetime:
    """The first instant of the UTC calendar month containing ``moment``."""
    moment = moment.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(moment: datetime) -> datetime:
    start = month_start(moment)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def isoformat(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``, the form every payload uses.

    Built from ``datetime.isoformat``, never ``strftime``: glibc's ``%Y`` writes year
    1 as ``1``, not the four digits RFC 3339 requires (``0001``)."""
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def isoformat_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else isoformat(moment)


def isoformat_seconds(moment: datetime | None) -> str | None:
    """UTC to the second with a ``Z`` (the seed pages' form), None kept as None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def as_utc(moment: datetime) -> datetime:
    """Attach UTC to a naive datetime read back from SQLite; convert aware ones."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
