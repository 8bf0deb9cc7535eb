"""The API in-process (FastAPI's TestClient) over the test backend, with keys for two orgs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.api.app import create_app
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from ..conftest import NOW


class NoBroker:
    """The API's view of a broker that is not there (metrics report it as a scrape error)."""

    def connection_for_read(self) -> Any:
        raise ConnectionError("no broker in API tests")


class Published(list[list[dict[str, Any]]]):
    """The ``meterd.ingest_batch`` messages the API published."""

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self for event in batch]


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def client(runtime: Runtime, published: Published) -> Iterator[TestClient]:
    runtime.catalog.create_org("globex", "Globex", NOW)
    runtime.catalog.create_feature("globex", "api_calls", now=NOW)
    app = create_app(lambda: runtime, publish_events=published.append, celery_app=NoBroker)
    with TestClient(app) as test_client:
        yield test_client


def key_for(runtime: Runtime, org: str, *permissions: Permission) -> dict[str, str]:
    token, _ = runtime.api_keys.create(org, list(permissions or [Permission.ALL]), NOW)
    return {"x-api-key": token}


@pytest.fixture
def acme(runtime: Runtime) -> dict[str, str]:
    """Headers of a key of org acme with every permission."""
    return key_for(runtime, "acme", Permission.ALL)


@pytest.fixture
def globex(runtime: Runtime) -> dict[str, str]:
    """Headers of a key of another org, globex, with every permission."""
    return key_for(runtime, "globex", Permission.ALL)
