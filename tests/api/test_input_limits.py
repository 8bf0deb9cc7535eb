"""Issue 13: input limits where input enters over HTTP. A body over the byte limit is
a 413 that names the limit, counted while the body is read; a body nested too deep,
not UTF-8, or with NaN is a 400 before any decoder recurses; a quantity outside the
one decimal grammar is refused; query strings and paths that are not UTF-8, carry
NUL or are too long are a 400. Never a 500."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.api.app import create_app
from meterd.api.body_limit import MAX_JSON_DEPTH, InputLimits, nesting_depth_exceeds
from meterd.core.events import MAX_EVENT_BYTES, MAX_EVENT_DEPTH
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.testing import event

from ..helpers import grant
from .conftest import NoBroker, Published

LIMIT = 4096
CONFUSABLE = ["\uff11", "\u0663", "1_000", " 2 ", "1e1", "+1", "0x10", "NaN", "Infinity", "-1"]


@pytest.fixture
def small(runtime: Runtime, published: Published) -> Iterator[TestClient]:
    """The API with a body limit of 4,096 bytes."""
    app = create_app(
        lambda: runtime, publish_events=published.append, celery_app=NoBroker, max_body_bytes=LIMIT
    )
    with TestClient(app) as test_client:
        yield test_client


def problem_of(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    detail: str = body["detail"]
    return detail


def post(client: TestClient, acme: dict[str, str], content: bytes | str, **headers: str) -> Any:
    return client.post(
        "/v1/events",
        content=content,
        headers={**acme, "content-type": "application/json", **headers},
    )


# -- the byte limit ------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_with_the_limit_in_the_message(
    small: TestClient, acme: dict[str, str], published: Published
) -> None:
    body = json.dumps([event(event_id=f"e{i}", time=utcnow()) for i in range(30)])
    assert len(body) > LIMIT
    detail = problem_of(post(small, acme, body), 413)
    assert "larger than 4,096 bytes (METERD_MAX_BODY_BYTES)" in detail
    assert published == []


def test_a_chunked_body_without_content_length_over_the_limit_is_413(
    small: TestClient, acme: dict[str, str]
) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 100

    response = small.post("/v1/events", content=chunks(), headers=acme)
    assert "content-length" not in response.request.headers
    assert "4,096 bytes" in problem_of(response, 413)


def test_a_body_at_the_limit_is_read_whole(small: TestClient, acme: dict[str, str]) -> None:
    body = json.dumps(event(time=utcnow())).encode()
    response = post(small, acme, body + b" " * (LIMIT - len(body)))
    assert response.status_code == 202, response.text


class Stream:
    """An ASGI client sending an endless body in chunks of 1,000 bytes, counting
    how many the app pulled."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.pulled = 0
        self.sent: list[dict[str, Any]] = []
        self.scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/events",
            "raw_path": b"/v1/events",
            "query_string": b"",
            "headers": headers or [],
        }

    async def receive(self) -> dict[str, Any]:
        self.pulled += 1
        return {"type": "http.request", "body": b"[" * 1000, "more_body": True}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def run(self, app: InputLimits) -> int:
        asyncio.run(app(self.scope, self.receive, self.send))  # type: ignore[arg-type]
        status: int = self.sent[0]["status"]
        return status


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app must not see a body over the limit")


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit_not_after_it_ends() -> None:
    stream = Stream()
    assert stream.run(InputLimits(never_called, max_body_bytes=10_000)) == 413
    assert stream.pulled == 11  # 11,000 bytes read of an endless body


def test_a_declared_length_over_the_limit_is_refused_before_a_byte_is_read() -> None:
    stream = Stream(headers=[(b"content-length", b"55000000")])
    assert stream.run(InputLimits(never_called, max_body_bytes=10_000)) == 413
    assert stream.pulled == 0


# -- nesting, encoding, JSON ------------------------------------------------------------


@pytest.mark.parametrize(
    "body", ["[" * 100_000, "[" * 900 + "]" * 900, '{"a":' * 40 + "1" + "}" * 40]
)
def test_deeply_nested_json_to_post_events_is_a_400_not_a_500(
    client: TestClient, acme: dict[str, str], body: str
) -> None:
    detail = problem_of(post(client, acme, body), 400)
    assert detail == (
        f"the body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"
        " (or does not close them)"
    )


def test_deeply_nested_json_to_a_route_with_a_body_model_is_a_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    nested = "[" * 900 + "]" * 900
    body = '{"customer_id": "c", "feature": "api_calls", "attributes": ' + nested + "}"
    response = client.post(
        "/v1/entitlements", content=body, headers={**acme, "content-type": "application/json"}
    )
    assert "deeper than 32 levels" in problem_of(response, 400)


def test_nesting_at_the_limit_and_brackets_inside_strings_pass(
    client: TestClient, acme: dict[str, str]
) -> None:
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    response = post(client, acme, at_limit)
    assert response.status_code == 202, response.text  # one invalid event: a list
    text_of_brackets = {**event(time=utcnow()), "id": '[{\\"' * 100}
    response = post(client, acme, json.dumps(text_of_brackets))
    assert response.status_code == 202, response.text


def test_the_depth_scan_measures_nesting_not_brackets() -> None:
    assert not nesting_depth_exceeds(b"[" + b"[1]," * 1000 + b"[2]]", 2)
    assert nesting_depth_exceeds(b"[[[1]]]", 2)
    assert not nesting_depth_exceeds(b'["[[[[", "\\\\", "\\"[[["]', 1)
    assert nesting_depth_exceeds(b"[[}", 1)  # not matched: not JSON either
    assert nesting_depth_exceeds(b'["\\\\", [["\\"]"]]]', 2)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"id": "\xff"}', "the body is not UTF-8 (byte 8)"),
        (b'{"id": "\xed\xa0\x80"}', "the body is not UTF-8"),  # an encoded surrogate
        ('{"id": "x"}'.encode("utf-16"), "NUL byte"),
        (b'{"id": "a\x00"}', "NUL byte"),
    ],
)
def test_a_body_that_is_not_utf8_text_is_a_400(
    client: TestClient, acme: dict[str, str], body: bytes, says: str
) -> None:
    assert says in problem_of(post(client, acme, body), 400)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(
    client: TestClient, acme: dict[str, str], constant: str
) -> None:
    body = json.dumps(event(time=utcnow())).replace('"1"', constant)
    detail = problem_of(post(client, acme, body), 400)
    assert detail == f"the body is not JSON: {constant} is not a JSON value"


def test_a_body_that_is_not_json_says_where(client: TestClient, acme: dict[str, str]) -> None:
    detail = problem_of(post(client, acme, b'{"id": '), 400)
    assert detail.startswith("the body is not JSON: Expecting value at character 7")


# -- events: ids, text, size, quantities ---------------------------------------------------


def results_of(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 202, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


@pytest.mark.parametrize("quantity", CONFUSABLE)
def test_a_quantity_outside_the_grammar_is_invalid_and_not_queued(
    client: TestClient, acme: dict[str, str], published: Published, quantity: str
) -> None:
    body = {**event(time=utcnow()), "data": {"feature": "api_calls", "quantity": quantity}}
    (result,) = results_of(post(client, acme, json.dumps(body)))
    assert result["status"] == "invalid"
    assert result["reason"].startswith("data.quantity: Value error, quantity")
    assert published == []


def with_number(literal: str) -> str:
    return json.dumps(event(time=utcnow())).replace('"quantity": "1"', f'"quantity": {literal}')


@pytest.mark.parametrize("literal", ["1e1", "1E+1", "2.5e0", "9007199254.740991"])
def test_a_json_number_is_judged_by_what_was_sent(
    client: TestClient, acme: dict[str, str], literal: str
) -> None:
    (result,) = results_of(post(client, acme, with_number(literal)))
    assert result["status"] == "invalid", result
    assert "without an exponent" in result["reason"] or "as a string" in result["reason"]


@pytest.mark.parametrize("literal", ["10", "10.0", "2.5", "0.000001"])
def test_a_json_number_in_plain_form_is_queued(
    client: TestClient, acme: dict[str, str], published: Published, literal: str
) -> None:
    (result,) = results_of(post(client, acme, with_number(literal)))
    assert result["status"] == "queued", result
    (queued,) = published.events
    assert json.loads(json.dumps(queued))["data"]["quantity"] == json.loads(literal)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"id": "x" * 513}, "id: String should have at most 512 characters"),
        ({"source": "s" * 513}, "source: String should have at most 512 characters"),
        ({"subject": "c" * 129}, "subject: String should have at most 128 characters"),
        ({"org": "o" * 65}, "does not match the API key's org"),
        ({"type": "t" * 10_000}, "type: String should match pattern"),
        ({"datacontenttype": "application/json" + " " * 200}, "datacontenttype: String should"),
        ({"data": {"feature": "f" * 65, "quantity": "1"}}, "data.feature: String should match"),
        ({"data": {"feature": "api_calls", "quantity": "1" * 41}}, "data.quantity"),
    ],
)
def test_over_long_event_attributes_are_invalid_naming_the_field(
    client: TestClient, acme: dict[str, str], change: dict[str, Any], says: str
) -> None:
    (result,) = results_of(post(client, acme, json.dumps({**event(time=utcnow()), **change})))
    assert result["status"] == "invalid"
    assert says in result["reason"], result["reason"]


def test_an_event_larger_than_the_event_limit_is_invalid_and_kept_as_a_stand_in(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    data = {"feature": "api_calls", "quantity": "1", "blob": "x" * MAX_EVENT_BYTES}
    (result,) = results_of(post(client, acme, json.dumps({**event(time=utcnow()), "data": data})))
    assert result["status"] == "invalid"
    assert result["reason"].startswith("data: the event is 65,")
    assert result["reason"].endswith(f"bytes as JSON, at most {MAX_EVENT_BYTES:,}")
    (letter,) = runtime.dead_letters.find(reason="invalid")
    kept = json.loads(letter.payload)
    assert kept["id"] == "evt-1" and kept["meterd_not_kept"] == result["reason"]
    assert len(letter.payload) < 3000


def test_an_event_nested_deeper_than_the_event_limit_is_invalid_naming_where(
    client: TestClient, acme: dict[str, str]
) -> None:
    deep: Any = 1
    for _ in range(MAX_EVENT_DEPTH):
        deep = [deep]
    body = {**event(time=utcnow()), "data": {"feature": "api_calls", "quantity": "1", "tags": deep}}
    (result,) = results_of(post(client, acme, json.dumps(body)))
    assert result["status"] == "invalid"
    nested = "[0]" * (MAX_EVENT_DEPTH - 2)  # the event 1, data 2, tags 3, ...
    assert result["reason"] == f"data.tags{nested}: nested deeper than {MAX_EVENT_DEPTH} levels"


@pytest.mark.parametrize(
    ("raw", "field"),
    [('"id": "\\ud800"', "id"), ('"note": "\\udfff"', "note"), ('"\\ud800": 1', "'\\ud800'")],
)
def test_a_lone_surrogate_anywhere_in_an_event_is_invalid_not_a_500(
    client: TestClient, runtime: Runtime, acme: dict[str, str], raw: str, field: str
) -> None:
    body = json.dumps(event(event_id="x", time=utcnow()))[:-1] + ", " + raw + "}"
    (result,) = results_of(post(client, acme, body))
    assert result["status"] == "invalid"
    assert result["id"] == (None if field == "id" else "x")  # never echoes broken text
    assert result["reason"].startswith(f"{field}:"), result["reason"]
    assert len(runtime.dead_letters.find(reason="invalid")) == 1


def test_a_reserve_quantity_outside_the_grammar_is_a_400(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant(runtime, customer="c")
    for quantity in CONFUSABLE:
        response = client.post(
            "/v1/customers/c/features/api_calls/reserve",
            json={"quantity": quantity, "idempotency_key": "k"},
            headers=acme,
        )
        assert problem_of(response, 400).startswith("quantity:"), quantity
    response = client.post(
        "/v1/customers/c/features/api_calls/reserve",
        json={"quantity": "0", "idempotency_key": "k"},
        headers=acme,
    )
    assert "quantity must be positive" in problem_of(response, 400)


# -- query strings and paths --------------------------------------------------------------

WINDOW = "from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z"
QUERIES = [
    "/v1/entitlements?customer={}",
    "/v1/entitlements?search={}",
    "/v1/usage?customer_id={}&" + WINDOW,
    "/v1/events?customer_id={}&" + WINDOW,
    "/entitlements/customer/unique/cust-1?search={}",
    "/api/workspace/entitlement-operations/entitlements?Search={}",
]


@pytest.mark.parametrize("value", ["%00", "%ff", "%ed%a0%80", "a" * 20_000], ids=str.__len__)
@pytest.mark.parametrize("url", QUERIES)
def test_a_bad_query_value_is_a_400_never_a_500(
    client: TestClient, acme: dict[str, str], url: str, value: str
) -> None:
    response = client.get(url.format(value), headers={**acme, "organisation": "acme"})
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/customers/%ff/features/api_calls",
        "/v1/customers/c/features/%c3%28",
        "/entitlements/customer/unique/%ed%a0%80",
    ],
)
def test_a_path_that_is_not_utf8_is_a_400(
    client: TestClient, acme: dict[str, str], path: str
) -> None:
    response = client.get(path, headers={**acme, "organisation": "acme"})
    assert problem_of(response, 400) == "the path is not UTF-8 once percent-decoded"


def test_a_query_string_that_is_not_utf8_says_so(client: TestClient, acme: dict[str, str]) -> None:
    response = client.get("/v1/entitlements?customer=%ff", headers=acme)
    assert problem_of(response, 400) == "the query string is not UTF-8 once percent-decoded"
