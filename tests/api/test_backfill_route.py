"""``POST /v1/events?backfill=true``: permission EVENTS:BACKFILL, its own queue, an
audited backfill whose batches the ``meterd.backfill_batch`` task counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.api.app import create_app
from meterd.core.terms import Term, TermUnit
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.services.catalog import NewEntitlement
from meterd.storage.models import Backfill
from meterd.testing import event

from ..conftest import NOW
from .conftest import NoBroker, key_for

Batch = tuple[list[Any], str, str, int]


@pytest.fixture
def queued() -> list[Batch]:
    return []


@pytest.fixture
def app_client(runtime: Runtime, queued: list[Batch]) -> Iterator[TestClient]:
    app = create_app(
        lambda: runtime,
        publish_events=lambda events: None,
        celery_app=NoBroker,
        publish_backfill=lambda *batch: queued.append(batch),  # type: ignore[arg-type]
    )
    with TestClient(app) as client:
        yield client


def history() -> list[dict[str, Any]]:
    return [
        event(quantity="2", event_id=f"old-{i}", time=NOW - timedelta(days=100 + i))
        for i in range(5)
    ]


def test_backfill_without_the_permission_is_403(runtime: Runtime, app_client: TestClient) -> None:
    headers = key_for(runtime, "acme", Permission.EVENTS_WRITE)
    answer = app_client.post("/v1/events?backfill=true", json=history(), headers=headers)
    assert answer.status_code == 403
    assert "EVENTS:BACKFILL" in answer.json()["detail"]


def test_the_backfill_permission_alone_does_not_write_live_events(
    runtime: Runtime, app_client: TestClient
) -> None:
    headers = key_for(runtime, "acme", Permission.EVENTS_BACKFILL)
    assert app_client.post("/v1/events", json=history(), headers=headers).status_code == 403


def test_a_backfill_request_is_audited_and_queued_on_its_own_queue(
    runtime: Runtime, app_client: TestClient, queued: list[Batch]
) -> None:
    ent = runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id="cust-1", feature="api_calls", quantity=Decimal(10),
            starts_at=NOW - timedelta(days=400), auto_renew=True, term=Term.of(1, TermUnit.MONTH),
        ),
        NOW,
    )  # fmt: skip
    headers = key_for(runtime, "acme", Permission.EVENTS_BACKFILL)
    answer = app_client.post("/v1/events?backfill=true", json=history(), headers=headers)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["queued"] == 5 and body["invalid"] == 0
    backfill_id = uuid.UUID(body["backfill_id"])
    assert [(org, bid, no) for _, org, bid, no in queued] == [("acme", str(backfill_id), 0)]
    # what the meterd.backfill_batch task does with the message
    for events, org, bid, no in queued:
        runtime.backfill.backfill(
            events, org=org, backfill_id=uuid.UUID(bid), batch_no=no, now=NOW, count_events=False
        )
    with runtime.database.sessions() as s:
        audit = s.get(Backfill, backfill_id)
        assert audit is not None
        assert audit.actor.startswith("key:") and audit.via == "api"
        assert (audit.events, audit.accepted) == (5, 5)
    assert sum(p.consumed for p in runtime.usage.periods_of(ent.id)) == Decimal(10)


def test_backfill_must_be_true_or_false(runtime: Runtime, app_client: TestClient) -> None:
    headers = key_for(runtime, "acme", Permission.ALL)
    answer = app_client.post("/v1/events?backfill=maybe", json=history(), headers=headers)
    assert answer.status_code == 400
