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

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    # a generous read timeout: on a loaded CI machine a request once took over
    # schemathesis's default 10 s (the same one answers in 0.1 s alone)
    response = case.call(headers=headers, timeout=60)
    where = (case.method, case.path, case.query, response.text[:500])
    assert response.status_code < 500, where
    if response.status_code >= 400:
        assert message_of(case.path, response).strip(), where


# -- hostile input (issue 13): what no schema generates -------------------------------------


def _operations(*methods: str) -> list[tuple[str, str]]:
    """The spec's operations of these methods, with their path parameters filled in."""
    return sorted(
        (method.upper(), re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path))
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in methods
    )


CONFUSABLE = ["\uff11", "\u0663", "1_000", " 2 ", "1e1", "+1", "0x10", "NaN", "Infinity"]
_text = st.one_of(
    st.sampled_from(CONFUSABLE),
    st.sampled_from([1_000, 100_000]).map("x".__mul__),
    st.sampled_from(["\x00", "a\x00b", "\ud800", "\u202e", "\ufeff1"]),
)
_event = {
    "specversion": "1.0",
    "id": "e",
    "source": "s",
    "type": "meterd.usage",
    "subject": "c",
    "data": {"feature": "api_calls", "quantity": "1"},
}
_fields = ["quantity", "customer_id", "feature", "key", "id", "source", "subject", "reason"]
_json_body = st.one_of(
    st.builds(lambda key, value: {key: value}, st.sampled_from(_fields), _text),
    st.builds(lambda key, value: {**_event, key: value}, st.sampled_from(_fields), _text),
    st.builds(lambda value: {**_event, "data": {"feature": "api_calls", "quantity": value}}, _text),
).map(lambda body: json.dumps(body).encode())
_depth = st.sampled_from([33, 999, 5_000, 100_000])
#: Bodies no schema generates: nesting past any decoder, invalid UTF-8, NUL bytes,
#: NaN, huge, broken or confusable strings in the fields routes read.
hostile_body = st.one_of(
    _depth.map(lambda n: b"[" * n),
    _depth.map(lambda n: b"[" * n + b"]" * n),
    _depth.map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.binary(max_size=100),
    st.sampled_from([b'{"quantity": NaN}', b'{"quantity": 1e1}', b"\xff\xfe{}", b"{\x00}"]),
    _json_body,
)
hostile_query = st.one_of(
    st.sampled_from(["%00", "%ff", "%ed%a0%80", "%c3%28", "%EF%BC%91"]),
    st.sampled_from([201, 20_000]).map("q".__mul__),
)
PARAMETERS = ["customer", "customer_id", "search", "feature", "quantity", "Search", "limit"]
HEADERS = {"organisation": "acme", "content-type": "application/json"}
_hostile = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_hostile
@given(operation=st.sampled_from(_operations("post", "patch", "put")), body=hostile_body)
def test_hostile_bodies_never_get_a_server_error(operation: tuple[str, str], body: bytes) -> None:
    method, path = operation
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = {**HEADERS, "x-api-key": _wired["token"]}
        response = client.request(method, path, content=body, headers=headers)
    assert response.status_code < 500, (method, path, body[:100], response.text[:300])


@_hostile
@given(
    operation=st.sampled_from(_operations("get", "delete")),
    parameter=st.sampled_from(PARAMETERS),
    value=hostile_query,
)
def test_hostile_query_strings_never_get_a_server_error(
    operation: tuple[str, str], parameter: str, value: str
) -> None:
    method, path = operation
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = {**HEADERS, "x-api-key": _wired["token"]}
        response = client.request(method, f"{path}?{parameter}={value}", headers=headers)
    assert response.status_code < 500, (method, path, value[:100], response.text[:300])
