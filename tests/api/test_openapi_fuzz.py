"""Schemathesis against the OpenAPI spec: generated requests never get a 500.

The app is built once for the module (schemathesis reads its spec at import);
each test wires it to that test's runtime and key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from meterd.api.app import create_app
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from ..conftest import NOW
from ..helpers import grant
from .conftest import NoBroker

_wired: dict[str, Any] = {}
app = create_app(
    lambda: _wired["runtime"], publish_events=lambda _events: None, celery_app=NoBroker
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(autouse=True)
def _wire_app(runtime: Runtime) -> Iterator[None]:
    grant(runtime, quantity="10")
    token, _ = runtime.api_keys.create("acme", [Permission.ALL], NOW)
    _wired.update(runtime=runtime, token=token)
    yield
    _wired.clear()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_generated_request_gets_a_server_error(case: Any) -> None:
    headers = {"x-api-key": _wired["token"], "organisation": "acme"}
    response = case.call(headers=headers)
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
