"""Stale beats unavailable: a process's kept meters through a database outage
(``services.meters.MeterCatalog``). A list whose version still holds is used when
reading it again fails; a list that may lack a new meter is not; a single kept
meter is always right (meters never change once created)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis

from meterd.core.domain import Aggregation
from meterd.core.meters import Meter
from meterd.services.meters import MeterCatalog
from meterd.storage.meters import MeterStoreUnavailable

SUM = Meter(feature="api_calls", aggregation=Aggregation.SUM, scale=6)
TOKENS = Meter(feature="tokens", scale=0, event_type="llm.request", value_property=("n",))
TTL = timedelta(seconds=10)


class Database:
    """The database side: the meters it holds, how often they were read, and whether
    it answers."""

    def __init__(self) -> None:
        self.meters = [SUM, TOKENS]
        self.reads = 0
        self.down = False

    def __call__(self, org: str) -> list[Meter]:
        self.reads += 1
        if self.down:
            raise MeterStoreUnavailable("the database did not answer")
        return list(self.meters)


class Versions:
    """The Redis side: a version to set, or an error to raise."""

    def __init__(self) -> None:
        self.value = 1
        self.error: Exception | None = None
        self.reads = 0

    def __call__(self, org: str) -> int:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def database() -> Database:
    return Database()


@pytest.fixture
def versions() -> Versions:
    return Versions()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def catalog(database: Database, versions: Versions, clock: Clock) -> MeterCatalog:
    return MeterCatalog(database, version=versions, ttl=TTL, clock=clock)


def test_a_list_past_its_ttl_is_used_when_the_database_does_not_answer(
    catalog: MeterCatalog, database: Database, clock: Clock
) -> None:
    kept = catalog.of("acme")
    database.down = True
    clock.now += 60
    assert catalog.of("acme") == kept


def test_after_a_failed_read_the_database_is_asked_again_a_ttl_later(
    catalog: MeterCatalog, database: Database, clock: Clock
) -> None:
    """A database that hangs is not asked at every batch of the outage."""
    catalog.of("acme")
    database.down = True
    clock.now += 10
    catalog.of("acme")
    clock.now += 9
    catalog.of("acme")
    assert database.reads == 2
    clock.now += 1
    catalog.of("acme")
    assert database.reads == 3


def test_the_database_back_is_read_at_the_next_expiry(
    catalog: MeterCatalog, database: Database, clock: Clock
) -> None:
    catalog.of("acme")
    database.down = True
    clock.now += 10
    catalog.of("acme")
    database.down = False
    database.meters = [SUM]
    clock.now += 10
    assert set(catalog.of("acme").by_feature) == {"api_calls"}


def test_a_list_whose_version_moved_is_not_used_when_the_database_does_not_answer(
    catalog: MeterCatalog, database: Database, versions: Versions
) -> None:
    """A meter was created since: counting raw events without it would miss it."""
    catalog.of("acme")
    database.down = True
    versions.value = 2
    with pytest.raises(MeterStoreUnavailable):
        catalog.of("acme")


def test_a_list_whose_version_could_not_be_read_is_not_used_whole_through_an_outage(
    catalog: MeterCatalog, database: Database, versions: Versions, clock: Clock
) -> None:
    catalog.of("acme")
    versions.error = redis.ConnectionError("down")
    with pytest.raises(redis.ConnectionError):
        catalog.of("acme")
    versions.error = None  # the same number, but a bump may have been missed meanwhile
    database.down = True
    with pytest.raises(MeterStoreUnavailable):
        catalog.of("acme")


def test_a_kept_meter_is_answered_without_reading_the_version_or_the_database(
    catalog: MeterCatalog, database: Database, versions: Versions, clock: Clock
) -> None:
    catalog.of("acme")
    database.down = True
    versions.value = 2
    clock.now += 3600
    before = (database.reads, versions.reads)
    assert catalog.meter("acme", "tokens") == TOKENS
    assert (database.reads, versions.reads) == before


def test_a_kept_meter_stays_usable_after_its_version_could_not_be_read(
    catalog: MeterCatalog, database: Database, versions: Versions
) -> None:
    catalog.of("acme")
    versions.error = redis.ConnectionError("down")
    with pytest.raises(redis.ConnectionError):
        catalog.of("acme")
    database.down = True
    assert catalog.meter("acme", "api_calls") == SUM


def test_the_meter_of_a_feature_the_kept_list_lacks_is_read_again(
    catalog: MeterCatalog, database: Database
) -> None:
    catalog.of("acme")
    database.meters = [SUM, TOKENS, Meter(feature="seats", scale=0)]
    assert catalog.meter("acme", "seats") == Meter(feature="seats", scale=0)
    assert catalog.meter("acme", "unknown") is None
    assert database.reads == 3


def test_the_meter_of_a_feature_the_kept_list_lacks_is_unavailable_with_the_database_down(
    catalog: MeterCatalog, database: Database
) -> None:
    catalog.of("acme")
    database.down = True
    with pytest.raises(MeterStoreUnavailable):
        catalog.meter("acme", "seats")


def test_a_process_that_never_read_the_meters_is_unavailable_with_the_database_down(
    catalog: MeterCatalog, database: Database
) -> None:
    database.down = True
    with pytest.raises(MeterStoreUnavailable):
        catalog.of("acme")
