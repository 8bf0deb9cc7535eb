"""JSON on the broker in meterd's processes: every number as it was sent, both ways."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from kombu import serialization

from meterd.core.quantity import JsonNumber, parse_quantity
from meterd.wire_json import exact_dumps, install_json_codec, plain_loads


@pytest.mark.parametrize("literal", ["0.00001", "1.50", "10.0", "0.1", "123456789.123456"])
def test_a_number_read_as_sent_is_written_as_sent(literal: str) -> None:
    value = plain_loads(f'{{"data": {{"quantity": {literal}}}}}')
    assert exact_dumps(value) == f'{{"data": {{"quantity": {literal}}}}}'


def test_a_decimal_is_written_as_its_exact_digits() -> None:
    assert exact_dumps([Decimal("0.000001"), Decimal("9007199254740991")]) == (
        "[0.000001, 9007199254740991]"
    )


def test_other_objects_are_written_as_kombu_writes_them() -> None:
    from datetime import UTC, datetime

    written = plain_loads(exact_dumps({"at": datetime(2026, 1, 1, tzinfo=UTC)}))
    assert written["at"]["__type__"] == "datetime"


@pytest.fixture
def publisher_codec() -> Iterator[None]:
    registry = serialization.registry
    saved = (dict(registry._encoders), dict(registry._decoders))
    install_json_codec(plain_decoding=False)
    yield
    registry._encoders.clear()
    registry._encoders.update(saved[0])
    registry._decoders.clear()
    registry._decoders.update(saved[1])


@pytest.mark.usefixtures("publisher_codec")
def test_a_quantity_published_by_meterd_reaches_the_worker_as_it_was_sent() -> None:
    """kombu wrote the float's repr: ``0.00001`` went out as ``1e-05``, refused."""
    event: dict[str, Any] = {"data": {"quantity": JsonNumber.from_literal("0.00001")}}
    _, _, body = serialization.dumps([[[event]], {}, {}], serializer="json")
    (received,) = plain_loads(body)[0][0]
    assert parse_quantity(received["data"]["quantity"]) == Decimal("0.00001")


@pytest.mark.usefixtures("publisher_codec")
def test_a_publisher_still_reads_kombu_messages_with_kombus_decoder() -> None:
    decoded = serialization.loads(
        '{"__type__": "decimal", "__value__": "1.5"}', "application/json", "utf-8"
    )
    assert decoded == Decimal("1.5")
