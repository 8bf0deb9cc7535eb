"""Schemathesis against the OpenAPI spec: generated requests never get a 500, and
every refusal says what is wrong.

The spec declares the query parameters routes read from the raw query string
(the Zenskar-style filters of ``/v1/entitlements`` and the Zenskar page, the
workspace page's parameters by their canonical names), with their types and
bounds, so the fuzzing reaches them: positive and negative values, and the
coverage phase's boundary values (a 64-bit limit and one past it, the longest
string and one longer, ...). Every operation is fuzzed, over the default and
the real backend.

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

WORKSPACE = "/api/workspace/entitlement-operations/entitlements"

_wired: dict[str, Any] = {}
app = create_app(
    lambda: _wired["runtime"],
    publish_events=lambda _events: None,
    celery_app=NoBroker,
    check_redis=False,  # built at import, before a runtime is wired
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(autouse=True)
def _wire_app(runtime: Runtime) -> Iterator[None]:
    grant(runtime, quantity="10")
    grant(runtime, quantity="0.1", customer="cust-2", contract_id="k-1")
    token, _ = runtime.api_keys.create("acme", [Permission.ALL], NOW)
    _wired.update(runtime=runtime, token=token)
    yield
    _wired.clear()


def message_of(path: str, response: Any) -> str:
    """What a 4xx answer says is wrong: the problem details' detail, or the first of
    the workspace page's envelope errors."""
    content_type = response.headers.get("content-type", [""])[0]
    body = response.json()
    if path == WORKSPACE and response.status_code == 400:
        assert content_type == "application/json", content_type
        assert body["Success"] is False and body["Data"] is None
        return str(body["Errors"][0]["Message"])
    assert content_type == "application/problem+json", content_type
    assert body["status"] == response.status_code
    return str(body["detail"])


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_generated_request_gets_a_server_error(case: Any) -> None:
    headers = {"x-api-key": _wired["token"], "organisation": "acme"}
    response = case.call(headers=headers)
    where = (case.method, case.path, case.query, response.text[:500])
    assert response.status_code < 500, where
    if response.status_code >= 400:
        assert message_of(case.path, response).strip(), where
