"""The longest ids meterd accepts fit the event log's key: a raw event's item id
(the event id, U+001F, the feature key) and a reservation's dedupe id. One that did
not would fail its flush on PostgreSQL, and every flush after it."""

from __future__ import annotations

from decimal import Decimal

from meterd.api.usage import IDEMPOTENCY_KEY_MAX
from meterd.core.domain import CUSTOMER_ID_MAX, Outcome
from meterd.core.events import MAX_ID_LENGTH
from meterd.core.meters import item_id
from meterd.runtime import Runtime
from meterd.services.reserve import marker_id
from meterd.storage.models import LOGGED_ID_LENGTH

from .conftest import NOW
from .helpers import grant

LONGEST_FEATURE = "f" * 64


def test_the_longest_item_id_fits_the_log() -> None:
    assert len(item_id("x" * MAX_ID_LENGTH, LONGEST_FEATURE)) <= LOGGED_ID_LENGTH


def test_the_longest_reservation_id_fits_the_log() -> None:
    longest = marker_id("c" * CUSTOMER_ID_MAX, LONGEST_FEATURE, "k" * IDEMPOTENCY_KEY_MAX)
    assert len(longest) <= LOGGED_ID_LENGTH


def test_a_raw_event_with_the_longest_id_is_flushed_into_the_log(runtime: Runtime) -> None:
    runtime.catalog.create_feature(
        "acme", LONGEST_FEATURE, now=NOW, scale=0, event_type="llm.request", value_property="n"
    )
    grant(runtime, feature=LONGEST_FEATURE, quantity="1000")
    raw = {
        "specversion": "1.0",
        "id": "x" * MAX_ID_LENGTH,
        "source": "gateway",
        "type": "llm.request",
        "subject": "cust-1",
        "org": "acme",
        "time": NOW.isoformat(),
        "data": {"n": 7},
    }
    assert runtime.ingest.ingest([raw], now=NOW).outcomes == [Outcome.ACCEPTED]
    runtime.flush.flush_all(NOW)
    logged = runtime.event_log.find([("acme", "gateway", item_id(raw["id"], LONGEST_FEATURE))])
    assert [e.quantity for e in logged.values()] == [Decimal(7)]
