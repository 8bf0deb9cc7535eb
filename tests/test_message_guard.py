"""How a worker reads a task message before Celery does (``meterd.message_guard``).

The real worker is exercised in tests/e2e/test_poison_messages.py; these are the
rules, one by one.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from kombu import compression, serialization

from meterd.celery_config import DEAD_LETTER_MESSAGE_TASK, FLUSH_TASK, INGEST_TASK
from meterd.core.event_parsing import parse_event
from meterd.core.events import InvalidEvent
from meterd.core.quantity import JsonNumber
from meterd.core.timeutil import utcnow
from meterd.message_guard import install_worker_codecs
from meterd.task_messages import (
    EXCERPT_BYTES,
    Readable,
    Unreadable,
    as_ingest_envelope,
    read_task_message,
    sanitised_headers,
    unreadable_record,
)
from meterd.testing import event
from meterd.wire_json import plain_loads


def ingest_batch(events: Any = None, *args: Any, **kwargs: Any) -> None:
    """The shape of ``meterd.tasks.ingest_batch``."""


def flush() -> None:
    """The shape of ``meterd.tasks.flush``."""


TASKS = {INGEST_TASK: ingest_batch, FLUSH_TASK: flush, DEAD_LETTER_MESSAGE_TASK: flush}
MAX = 1024 * 1024


def read(
    body: bytes | str,
    headers: Any = None,
    content_type: str | None = "application/json",
    content_encoding: str | None = "utf-8",
) -> Readable | Unreadable:
    return read_task_message(
        headers={"task": INGEST_TASK, "id": "t-1"} if headers is None else headers,
        body=body,
        content_type=content_type,
        content_encoding=content_encoding,
        tasks=TASKS,
        max_bytes=MAX,
    )


def test_a_well_formed_ingest_message_goes_on_unchanged() -> None:
    verdict = read(json.dumps([[[{"id": "e"}]], {}, {"chord": None}]))
    assert verdict == Readable(
        {"id": "t-1", "task": INGEST_TASK}, [[[{"id": "e"}]], {}, {"chord": None}]
    )


def test_kombu_type_tags_are_read_as_the_objects_they_are() -> None:
    tagged = {"__type__": "uuid", "__value__": "not-a-uuid"}
    verdict = read(json.dumps([[[{"data": tagged}]], {}, {}]))
    assert isinstance(verdict, Readable)
    assert verdict.body[0][0][0]["data"] == tagged


def test_non_integer_numbers_keep_their_literal_text() -> None:
    value = plain_loads(b'{"quantity": 0.1000000000000000055511151231257827}')
    assert isinstance(value["quantity"], JsonNumber)
    assert value["quantity"].text == "0.1000000000000000055511151231257827"


def test_nan_and_infinity_are_kept_as_text_so_only_their_event_is_refused() -> None:
    assert plain_loads("[NaN, Infinity, -Infinity]") == ["NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize(
    ("body", "batch"),
    [
        ('{"a": 1}', [{"a": 1}]),
        ("null", []),
        ('"hello"', ["hello"]),
        ('[{"id": "1"}, {"id": "2"}]', [{"id": "1"}, {"id": "2"}]),
        ('[{"id": "1"}, {}, {}]', [{"id": "1"}, {}, {}]),  # three events, not an envelope
    ],
)
def test_an_ingest_body_that_is_no_envelope_is_the_batch_itself(body: str, batch: Any) -> None:
    verdict = read(body)
    assert isinstance(verdict, Readable) and verdict.rewritten
    assert verdict.body[0] == [batch] and verdict.body[1] == {}


def test_ingest_arguments_that_do_not_fit_become_payloads_of_one_batch() -> None:
    envelope = [[[{"id": "1"}], "text"], {"events": [{"id": "2"}], "extra": 1}, {}]
    assert as_ingest_envelope(envelope)[:2] == [
        [[{"id": "1"}, "text", {"id": "2"}, {"unexpected task keyword arguments": ["extra"]}]],
        {},
    ]
    verdict = read(json.dumps([[[]], {"events": []}, {}]))  # events given twice
    assert isinstance(verdict, Readable) and verdict.rewritten


def test_a_message_over_the_size_bound_is_unreadable_before_it_is_decoded() -> None:
    verdict = read(b"{" * (MAX + 1))
    assert isinstance(verdict, Unreadable) and verdict.kind == "too_large"
    assert f"{MAX + 1:,} bytes" in verdict.reason


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("{{{", "Expecting property name"),
        (b"\xff\xfe", "can't decode byte 0xff"),
        ("[" * 100_000, "recursion"),
    ],
)
def test_a_body_that_is_not_json_is_unreadable(body: bytes | str, why: str) -> None:
    verdict = read(body)
    assert isinstance(verdict, Unreadable) and verdict.kind == "not_json"
    assert why in verdict.reason


@pytest.mark.parametrize(
    ("content_type", "content_encoding"),
    [
        ("application/x-python-serialize", "binary"),
        ("application/x-yaml", "utf-8"),
        ("text/plain", "utf-8"),
        ("application/json", "binary"),
        (None, None),
    ],
)
def test_only_json_in_utf_8_is_read(content_type: str | None, content_encoding: str | None) -> None:
    verdict = read("[[[]], {}, {}]", content_type=content_type, content_encoding=content_encoding)
    assert isinstance(verdict, Unreadable) and verdict.kind == "content_type"


def test_a_json_content_type_with_parameters_is_read() -> None:
    verdict = read("[[[]], {}, {}]", content_type="application/json; charset=utf-8")
    assert isinstance(verdict, Readable)


@pytest.mark.parametrize("headers", [None, {}, {"task": 42}, ["task"], "task"])
def test_a_message_without_a_task_name_is_unreadable(headers: Any) -> None:
    verdict = read_task_message(
        headers=headers,
        body="[[], {}, {}]",
        content_type="application/json",
        content_encoding="utf-8",
        tasks=TASKS,
        max_bytes=MAX,
    )
    assert isinstance(verdict, Unreadable) and verdict.kind == "no_task"


def test_a_task_meterd_does_not_have_is_unreadable() -> None:
    verdict = read("[[], {}, {}]", headers={"task": "celery.chord_unlock", "id": "x"})
    assert verdict == Unreadable("unknown_task", "meterd has no task named 'celery.chord_unlock'")


def test_other_tasks_need_an_envelope_whose_arguments_fit() -> None:
    headers = {"task": FLUSH_TASK, "id": "f"}
    assert isinstance(read("[[], {}, {}]", headers=headers), Readable)
    assert read('{"a": 1}', headers=headers).kind == "not_an_envelope"  # type: ignore[union-attr]
    assert read("[[1], {}, {}]", headers=headers).kind == "not_an_envelope"  # type: ignore[union-attr]


def test_only_the_headers_celery_reads_are_kept_each_of_its_type() -> None:
    headers = {
        "task": INGEST_TASK,
        "id": "t",
        "retries": 2,
        "eta": "2026-01-01T00:00:00+00:00",
        "timelimit": [None, 30],
        "root_id": {"a": 1},
        "argsrepr": 42,
        "stamps": {"x": 1},
        "compression": "gzip",
    }
    assert sanitised_headers(headers, FLUSH_TASK) == {
        "task": FLUSH_TASK,
        "id": "t",
        "retries": 2,
        "eta": "2026-01-01T00:00:00+00:00",
    }


@pytest.mark.parametrize(
    "bad",
    [{"eta": "garbage"}, {"timelimit": "x"}, {"timelimit": [1]}, {"retries": "many"},
     {"retries": True}, {"expires": 5}],
)  # fmt: skip
def test_a_header_of_the_wrong_type_is_dropped(bad: dict[str, Any]) -> None:
    assert sanitised_headers({"id": "t", **bad}, FLUSH_TASK) == {"id": "t", "task": FLUSH_TASK}


@pytest.mark.parametrize("task_id", [None, 42, "", "x" * 256])
def test_a_message_without_a_usable_id_gets_one(task_id: Any) -> None:
    kept = sanitised_headers({"id": task_id}, INGEST_TASK)
    assert isinstance(kept["id"], str) and 0 < len(kept["id"]) <= 255


def test_an_ingest_message_never_expires() -> None:
    headers = {"id": "t", "expires": "2000-01-01T00:00:00+00:00"}
    assert "expires" not in sanitised_headers(headers, INGEST_TASK)
    assert "expires" in sanitised_headers(headers, FLUSH_TASK)


class FakeMessage:
    def __init__(self, body: bytes, headers: Any = None) -> None:
        self.body = body
        self.headers = headers if headers is not None else {"task": "x"}
        self.content_type = "application/json"
        self.content_encoding = "utf-8"


def test_a_dead_letter_keeps_the_whole_body_of_a_message_within_the_bound() -> None:
    body = b"\xff" + b"x" * (EXCERPT_BYTES * 2)
    record = unreadable_record(FakeMessage(body), "not_json", "why", "meterd.ingest")
    assert record["body_encoding"] == "base64" and not record["truncated"]
    assert record["bytes"] == len(body)


def test_a_dead_letter_keeps_the_head_of_a_message_over_the_bound() -> None:
    body = b"y" * (EXCERPT_BYTES * 2)
    record = unreadable_record(FakeMessage(body), "too_large", "why", "meterd.ingest")
    assert record["body"] == "y" * EXCERPT_BYTES and record["truncated"]
    assert record["bytes"] == len(body)


@pytest.fixture
def worker_codecs() -> Any:
    """The worker's codecs in this process, for one test (kombu's afterwards)."""
    saved = (dict(compression._encoders), dict(compression._decoders))
    json_decoder = serialization.registry._decoders["application/json"]
    install_worker_codecs(MAX)
    yield
    compression._encoders.clear()
    compression._encoders.update(saved[0])
    compression._decoders.clear()
    compression._decoders.update(saved[1])
    serialization.registry._decoders["application/json"] = json_decoder


@pytest.mark.usefixtures("worker_codecs")
def test_the_worker_decodes_json_bodies_without_kombu_type_revival() -> None:
    body = json.dumps([{"__type__": "uuid", "__value__": "x"}, 0.1])
    decoded = serialization.loads(body, "application/json", "utf-8")
    assert decoded[0] == {"__type__": "uuid", "__value__": "x"}
    assert decoded[1].text == "0.1"


@pytest.mark.usefixtures("worker_codecs")
def test_a_compressed_body_is_read_up_to_the_size_bound() -> None:
    assert compression.decompress(zlib.compress(b"x" * MAX), "application/x-gzip") == b"x" * MAX
    with pytest.raises(ValueError, match="decompresses to more than"):
        compression.decompress(zlib.compress(b"x" * (MAX + 1)), "zlib")


def test_a_quantity_sent_with_an_exponent_is_judged_by_its_literal() -> None:
    """kombu decoded ``1e1`` into the float 10.0, which counted as 10."""
    body = json.dumps([[[event()]], {}, {}]).replace('"quantity": "1"', '"quantity": 1e1')
    verdict = read(body)
    assert isinstance(verdict, Readable)
    (decoded,) = verdict.body[0][0]
    parsed = parse_event(decoded, received_at=utcnow())
    assert isinstance(parsed, InvalidEvent) and "without an exponent" in parsed.reason


def test_a_header_text_longer_than_its_bound_is_dropped() -> None:
    kept = sanitised_headers({"id": "t", "argsrepr": "x" * 2000, "origin": "o"}, FLUSH_TASK)
    assert kept == {"id": "t", "task": FLUSH_TASK, "origin": "o"}
