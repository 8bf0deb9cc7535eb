"""UUIDv7 identifiers: valid version 7 UUIDs, ordered by time."""

from __future__ import annotations

from meterd.core.ids import uuid7


def test_uuid7_is_a_version_7_rfc_uuid() -> None:
    value = uuid7()
    assert value.version == 7
    assert value.variant == "specified in RFC 4122"


def test_uuid7_orders_by_millisecond() -> None:
    earlier = [uuid7(1_700_000_000_000) for _ in range(50)]
    later = [uuid7(1_700_000_000_001) for _ in range(50)]
    assert max(earlier) < min(later)


def test_uuid7_is_unique_within_a_millisecond() -> None:
    assert len({uuid7(1_700_000_000_000) for _ in range(10_000)}) == 10_000
