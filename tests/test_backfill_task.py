"""``meterd.backfill_batch``: its own queue, applied once per (backfill, batch), and a
malformed message dropped with a log line instead of stopping the worker."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterd import tasks
from meterd.celery_config import BACKFILL_QUEUE, BACKFILL_TASK, QUEUES, celery_config
from meterd.core.terms import Term, TermUnit
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.testing import event


def test_the_backfill_task_has_its_own_queue_which_workers_consume(runtime: Runtime) -> None:
    routes = celery_config(runtime.settings)["task_routes"]
    assert routes[BACKFILL_TASK] == {"queue": BACKFILL_QUEUE} == {"queue": "meterd.backfill"}
    assert routes["meterd.ingest_batch"]["queue"] != BACKFILL_QUEUE
    assert BACKFILL_QUEUE in QUEUES


def test_a_batch_delivered_twice_counts_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "get_runtime", lambda: runtime)
    now = utcnow()  # the task reads the real clock
    ent = runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id="cust-1", feature="api_calls", quantity=Decimal(10),
            starts_at=now - timedelta(days=400), auto_renew=True, term=Term.of(1, TermUnit.MONTH),
        ),
        now,
    )  # fmt: skip
    backfill_id = runtime.backfill.open("acme", "key:k", "api", now, 3)
    batch = [
        event(quantity="4", event_id=f"t{i}", time=now - timedelta(days=100 + 40 * i))
        for i in range(3)
    ]
    assert tasks.backfill_batch.run(batch, "acme", str(backfill_id), 0) == {"accepted": 3}
    assert tasks.backfill_batch.run(batch, "acme", str(backfill_id), 0) == {"duplicate": 3}
    assert sum(p.consumed for p in runtime.usage.periods_of(ent.id)) == Decimal(12)
    audit = runtime.backfill.store.get(backfill_id)
    assert audit is not None and (audit.events, audit.accepted, audit.duplicates) == (3, 3, 0)


@pytest.mark.parametrize(
    "args", [([], None, "x", 0), ([], "acme", "not-a-uuid", 0), ([], "acme", None, "0")]
)
def test_a_malformed_backfill_message_is_dropped_with_a_log_line(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, args: tuple[object, ...]
) -> None:
    monkeypatch.setattr(tasks, "get_runtime", lambda: runtime)
    assert tasks.backfill_batch.run(*args) == {"malformed": 1}


def test_two_copies_of_a_batch_at_once_audit_each_event_once(runtime: Runtime) -> None:
    """Copy A counts the open period's event live first; copy B, arriving meanwhile, is
    told it is a duplicate and applies the batch before A: the audit still says every
    event accepted once (A moves its live event from B's duplicates to accepted)."""
    now = utcnow()
    ent = runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id="cust-1", feature="api_calls", quantity=Decimal(10),
            starts_at=now - timedelta(days=400), auto_renew=True, term=Term.of(1, TermUnit.MONTH),
        ),
        now,
    )  # fmt: skip
    backfill_id = runtime.backfill.open("acme", "key:k", "api", now, 3)
    batch = [
        event(quantity="1", event_id="open", time=now - timedelta(days=1)),  # live path
        event(quantity="1", event_id="old-1", time=now - timedelta(days=100)),
        event(quantity="1", event_id="old-2", time=now - timedelta(days=140)),
    ]
    store = runtime.backfill.store
    apply = store.apply
    copies = {"b": False}

    def b_applies_first(*args: Any, **kwargs: Any) -> Any:
        if not copies["b"]:
            copies["b"] = True
            runtime.backfill.backfill(
                batch, org="acme", backfill_id=backfill_id, batch_no=0, now=now, count_events=False
            )
        return apply(*args, **kwargs)

    store.apply = b_applies_first  # type: ignore[method-assign]
    report = runtime.backfill.backfill(
        batch, org="acme", backfill_id=backfill_id, batch_no=0, now=now, count_events=False
    )
    assert report.applied_before
    runtime.flush.flush_all(now)
    assert sum(p.consumed for p in runtime.usage.periods_of(ent.id)) == Decimal(3)
    audit = runtime.backfill.store.get(backfill_id)
    assert audit is not None and (audit.events, audit.accepted, audit.duplicates) == (3, 3, 0)
