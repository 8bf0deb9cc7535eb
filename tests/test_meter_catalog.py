"""How a worker keeps an org's meters: read once, read again when the org's meters
version changes, cannot be read, or the list expires (``services.meters``; through
a database outage: test_meter_catalog_outage.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis

from meterd.core.domain import Aggregation
from meterd.core.meters import Meter
from meterd.runtime import Runtime
from meterd.services.meters import MeterCatalog

from .conftest import NOW

SUM = Meter(feature="api_calls", aggregation=Aggregation.SUM, scale=6)


class Loads:
    """The database side: counts how often the meters are read."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, org: str) -> list[Meter]:
        self.count += 1
        return [SUM]


class Versions:
    """The Redis side: a version to set, or an error to raise."""

    def __init__(self) -> None:
        self.value = 1
        self.error: Exception | None = None

    def __call__(self, org: str) -> int:
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
def loads() -> Loads:
    return Loads()


@pytest.fixture
def versions() -> Versions:
    return Versions()


@pytest.fixture
def catalog(loads: Loads, versions: Versions) -> MeterCatalog:
    return MeterCatalog(loads, version=versions, clock=lambda: 0.0)


def test_the_kept_meters_are_used_while_the_version_holds(
    catalog: MeterCatalog, loads: Loads
) -> None:
    catalog.of("acme")
    catalog.of("acme")
    assert loads.count == 1


def test_a_new_version_has_the_meters_read_again(
    catalog: MeterCatalog, loads: Loads, versions: Versions
) -> None:
    catalog.of("acme")
    versions.value = 2
    catalog.of("acme")
    assert loads.count == 2


def test_a_version_the_store_lost_has_the_meters_read_again(
    catalog: MeterCatalog, loads: Loads, versions: Versions
) -> None:
    """A Redis that lost the hash reads 0: different is enough, it need not grow."""
    versions.value = 5
    catalog.of("acme")
    versions.value = 0
    catalog.of("acme")
    assert loads.count == 2


def test_a_version_that_cannot_be_read_has_the_meters_read_again(
    catalog: MeterCatalog, loads: Loads, versions: Versions
) -> None:
    catalog.of("acme")
    versions.error = redis.ConnectionError("down")
    with pytest.raises(redis.ConnectionError):
        catalog.of("acme")
    versions.error = None  # back, with the same number: a bump may have been missed
    catalog.of("acme")
    assert loads.count == 2


def test_the_kept_meters_expire_after_the_ttl(loads: Loads, versions: Versions) -> None:
    now = [0.0]
    catalog = MeterCatalog(loads, version=versions, ttl=timedelta(seconds=10), clock=lambda: now[0])
    catalog.of("acme")
    now[0] = 10.0
    catalog.of("acme")
    assert loads.count == 2


def test_each_org_keeps_its_own_meters(catalog: MeterCatalog, loads: Loads) -> None:
    catalog.of("acme")
    catalog.of("globex")
    catalog.of("acme")
    assert loads.count == 2


def test_creating_a_feature_bumps_its_orgs_meters_version(runtime: Runtime) -> None:
    before = runtime.meter_versions.current("acme")
    runtime.catalog.create_feature("acme", "tokens", now=NOW, scale=0)
    assert runtime.meter_versions.current("acme") != before


def test_meters_versions_are_kept_per_org(runtime: Runtime) -> None:
    runtime.meter_versions.bump("acme")
    assert runtime.meter_versions.current("globex") == 0
