"""Notifications: threshold crossings and transitions, recorded once, delivered to webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from meterd.core.domain import BillingType
from meterd.core.notifications import Delivery
from meterd.runtime import Runtime
from meterd.services.notify import (
    FIRST_BACKOFF,
    PUBLISH_LEASE,
    HttpWebhookSender,
    NotificationService,
)
from meterd.storage.models import Notification
from meterd.testing import event

from .conftest import NOW
from .helpers import grant


def usage(rt: Runtime, *quantities: str, prefix: str = "e", customer: str = "cust-1") -> None:
    events = [
        event(customer, q, event_id=f"{prefix}-{i}", time=NOW) for i, q in enumerate(quantities)
    ]
    rt.ingest.ingest(events, now=NOW)


def recorded(rt: Runtime, entitlement_id: object) -> list[Notification]:
    return rt.notification_store.all_for(entitlement_id)  # type: ignore[arg-type]


def crossings(rt: Runtime, entitlement_id: object) -> list[int]:
    return sorted(
        json.loads(n.payload)["data"]["threshold_percent"]
        for n in recorded(rt, entitlement_id)
        if n.type == "entitlement.threshold_crossed"
    )


# -- threshold crossings ------------------------------------------------------------


def test_consumption_below_80_percent_records_no_crossing(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    usage(runtime, "79.999999")
    runtime.flush.flush_all(NOW)
    assert crossings(runtime, ent.id) == []


def test_reaching_80_percent_records_one_crossing_with_its_payload(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    usage(runtime, "79.5", "0.5", "3")
    runtime.flush.flush_all(NOW)
    (note,) = recorded(runtime, ent.id)
    payload = json.loads(note.payload)
    assert payload == {
        "id": note.id,
        "type": "entitlement.threshold_crossed",
        "org": "acme",
        "customer_id": "cust-1",
        "feature": "api_calls",
        "entitlement_id": str(ent.id),
        "occurred_at": "2026-11-22T10:00:00.000000Z",
        "data": {
            "rule": {"id": "default_80", "kind": "PERCENT", "threshold": "80"},
            "threshold_percent": 80,
            "period_start": payload["data"]["period_start"],
            "quantity": "100",
            "consumed": "83",  # the batch's total: counters are written once per batch
        },
    }
    assert note.delivery == Delivery.PENDING and note.due_at == NOW


def test_one_batch_going_past_the_limit_records_both_crossings(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="10")
    usage(runtime, "12")
    runtime.flush.flush_all(NOW)
    assert crossings(runtime, ent.id) == [80, 100]


def test_crossings_in_separate_flushes_are_each_recorded_once(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="10")
    usage(runtime, "8", prefix="a")
    runtime.flush.flush_all(NOW)
    usage(runtime, "1", prefix="b")
    runtime.flush.flush_all(NOW)
    usage(runtime, "1", "5", prefix="c")
    runtime.flush.flush_all(NOW)
    assert crossings(runtime, ent.id) == [80, 100]


def test_a_redelivered_batch_records_no_second_crossing(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="10")
    usage(runtime, "9")
    runtime.flush.flush_all(NOW)
    usage(runtime, "9")  # the same events again: duplicates
    usage(runtime, "9")
    runtime.flush.flush_all(NOW)
    assert crossings(runtime, ent.id) == [80]


def test_a_flush_batch_applied_twice_records_its_crossing_once(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="10")
    usage(runtime, "9")
    batch = runtime.counters.begin_flush("batch-1")
    assert batch == "batch-1"
    content = runtime.counters.read_flush_batch()
    assert len(content.crossings) == 1
    repo = runtime.usage
    assert repo.apply_flush_batch(batch, content.deltas, NOW, content.crossings).applied is True
    assert repo.apply_flush_batch(batch, content.deltas, NOW, content.crossings).applied is False
    assert crossings(runtime, ent.id) == [80]


def test_usage_spilling_to_a_second_entitlement_crosses_only_the_full_one(
    runtime: Runtime,
) -> None:
    first = grant(runtime, quantity="10", priority=0)
    second = grant(runtime, quantity="100", priority=1)
    usage(runtime, "15")
    runtime.flush.flush_all(NOW)
    assert crossings(runtime, first.id) == [80, 100]
    assert crossings(runtime, second.id) == []


def test_pay_per_use_usage_crosses_no_threshold(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="10", billing_type=BillingType.PAY_PER_USE)
    usage(runtime, "50")
    runtime.flush.flush_all(NOW)
    assert crossings(runtime, ent.id) == []


def test_an_unlimited_grant_crosses_no_threshold(runtime: Runtime) -> None:
    ent = grant(runtime, quantity=None)
    usage(runtime, "50")
    runtime.flush.flush_all(NOW)
    assert crossings(runtime, ent.id) == []


def test_a_crossing_is_exact_at_huge_quantities(runtime: Runtime) -> None:
    # 80% of 9,000,000,000.000001 is 7,200,000,000.0000008: 7,200,000,000.000001 crosses.
    ent = grant(runtime, quantity="9000000000.000001")
    usage(runtime, "7200000000", prefix="a")
    runtime.flush.flush_all(NOW)
    assert crossings(runtime, ent.id) == []
    usage(runtime, "0.000001", prefix="b")
    runtime.flush.flush_all(NOW)
    assert crossings(runtime, ent.id) == [80]


# -- transitions ----------------------------------------------------------------------


def test_every_status_change_records_a_notification(runtime: Runtime) -> None:
    ends = NOW + timedelta(days=1)
    ent = grant(runtime, ends_at=ends, grace=timedelta(days=2))
    runtime.lifecycle.advance(ends + timedelta(days=3))
    notes = recorded(runtime, ent.id)
    data = [json.loads(n.payload) for n in notes]
    assert [(d["type"], d["data"]["from_status"], d["data"]["to_status"]) for d in data] == [
        ("entitlement.status_changed", "ACTIVE", "GRACE"),
        ("entitlement.status_changed", "GRACE", "EXPIRED"),
    ]
    assert data[0]["occurred_at"] == "2026-11-23T10:00:00.000000Z"


def test_a_renewal_records_a_renewed_notification(runtime: Runtime) -> None:
    ends = NOW + timedelta(hours=1)
    ent = grant(runtime, starts_at=ends - timedelta(days=30), ends_at=ends, auto_renew=True)
    runtime.lifecycle.advance(ends)
    (note,) = recorded(runtime, ent.id)
    assert note.type == "entitlement.renewed"


def test_a_transition_applied_by_two_racing_jobs_is_notified_once(runtime: Runtime) -> None:
    ends = NOW + timedelta(hours=1)
    ent = grant(runtime, ends_at=ends)
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        runtime.lifecycle.advance(ends)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [n.type for n in recorded(runtime, ent.id)] == ["entitlement.status_changed"]


# -- dispatch and webhooks --------------------------------------------------------------


class Receiver:
    """A local webhook endpoint answering with the given statuses, in turn."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([])
    yield r
    r.close()


def local(rt: Runtime) -> NotificationService:
    """The runtime's notification service, allowed to call the local receiver (a
    loopback target, refused by default: see test_webhooks.py)."""
    service = rt.notifications
    service.sender = HttpWebhookSender(5.0, time.time, allow_private=True)
    return service


def published_by(service: NotificationService, now: Any) -> list[dict[str, Any]]:
    batches: list[list[dict[str, Any]]] = []
    service.dispatch(now, batches.append)
    return [p for batch in batches for p in batch]


#: When ``expire`` runs the lifecycle job: its notification is due from then on.
T = NOW + timedelta(hours=1)


def expire(rt: Runtime) -> object:
    """One entitlement that expires at T; returns its id after the job ran at T."""
    ent = grant(rt, ends_at=T)
    rt.lifecycle.advance(T)
    return ent.id


def test_dispatch_publishes_each_due_notification_once_per_lease(runtime: Runtime) -> None:
    expire(runtime)
    service = local(runtime)
    assert len(published_by(service, T)) == 1
    assert published_by(service, T + PUBLISH_LEASE - timedelta(seconds=1)) == []
    # The consumer never reported back: the lease ran out, it is published again.
    assert len(published_by(service, T + PUBLISH_LEASE)) == 1


def test_a_notification_of_an_org_without_webhook_is_done_once_published(
    runtime: Runtime,
) -> None:
    ent_id = expire(runtime)
    service = local(runtime)
    report = service.deliver(published_by(service, T), T)
    assert report.no_webhook == 1
    (note,) = recorded(runtime, ent_id)
    assert (note.delivery, note.due_at) == (Delivery.NO_WEBHOOK, None)
    assert published_by(service, T + timedelta(days=1)) == []


def test_the_webhook_receives_the_payload_signed(runtime: Runtime, receiver: Receiver) -> None:
    runtime.notification_store.set_webhook("acme", receiver.url, "s3cret")
    ent_id = expire(runtime)
    service = local(runtime)
    payloads = published_by(service, T)
    assert service.deliver(payloads, T).delivered == 1
    ((headers, body),) = receiver.requests
    assert json.loads(body) == payloads[0]
    assert headers["webhook-id"] == payloads[0]["id"]
    # Standard Webhooks; a secret of before (not whsec_) is the HMAC key's bytes.
    stamp = headers["webhook-timestamp"]
    signed = f"{payloads[0]['id']}.{stamp}.".encode() + body
    mac = base64.b64encode(hmac.new(b"s3cret", signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{mac}"
    (note,) = recorded(runtime, ent_id)
    assert (note.delivery, note.attempts, note.due_at) == (Delivery.DELIVERED, 1, None)


def test_a_failed_webhook_call_is_retried_after_a_backoff(
    runtime: Runtime, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    runtime.notification_store.set_webhook("acme", receiver.url, None)
    ent_id = expire(runtime)
    service = local(runtime)
    assert service.deliver(published_by(service, T), T).failed_attempts == 1
    (note,) = recorded(runtime, ent_id)
    assert (note.delivery, note.attempts, note.due_at) == (
        Delivery.PENDING,
        1,
        T + FIRST_BACKOFF,
    )
    assert "HTTP 500" in (note.last_error or "")
    assert published_by(service, T + FIRST_BACKOFF - timedelta(seconds=1)) == []
    second = T + FIRST_BACKOFF
    assert service.deliver(published_by(service, second), second).failed_attempts == 1
    third = second + 2 * FIRST_BACKOFF
    assert service.deliver(published_by(service, third), third).delivered == 1
    assert len(receiver.requests) == 3
    (note,) = recorded(runtime, ent_id)
    assert (note.delivery, note.attempts) == (Delivery.DELIVERED, 3)


def test_a_webhook_that_keeps_failing_is_given_up_after_the_last_attempt(
    runtime: Runtime, receiver: Receiver
) -> None:
    receiver.statuses = [500] * 10
    runtime.notification_store.set_webhook("acme", receiver.url, None)
    ent_id = expire(runtime)
    service = NotificationService(runtime.notification_store, local(runtime).sender, max_attempts=3)
    moment = T
    for _ in range(3):
        service.deliver(published_by(service, moment), moment)
        moment += timedelta(hours=2)
    (note,) = recorded(runtime, ent_id)
    assert (note.delivery, note.attempts, note.due_at) == (Delivery.FAILED, 3, None)
    assert published_by(service, moment + timedelta(days=1)) == []
    assert len(receiver.requests) == 3


def test_an_unreachable_webhook_counts_as_a_failed_attempt(runtime: Runtime) -> None:
    runtime.notification_store.set_webhook("acme", "http://127.0.0.1:9/nothing-here", None)
    ent_id = expire(runtime)
    service = local(runtime)
    assert service.deliver(published_by(service, T), T).failed_attempts == 1
    (note,) = recorded(runtime, ent_id)
    assert note.delivery == Delivery.PENDING and "ConnectError" in (note.last_error or "")


def test_a_redelivered_notify_task_does_not_call_the_webhook_again(
    runtime: Runtime, receiver: Receiver
) -> None:
    runtime.notification_store.set_webhook("acme", receiver.url, None)
    expire(runtime)
    service = local(runtime)
    payloads = published_by(service, T)
    service.deliver(payloads, T)
    assert service.deliver(payloads, T).skipped == 1
    assert len(receiver.requests) == 1
