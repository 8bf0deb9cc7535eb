"""Notification delivery: publish the outbox to ``meterd.notify``, then call webhooks.

Two steps, so that a slow or broken webhook never holds up metering:

1. ``dispatch`` (beat, and right after a flush or lifecycle run that created
   notifications) claims due rows with a lease and publishes their payloads as
   ``meterd.notify`` tasks, in batches.
2. ``deliver`` (the ``meterd.notify`` task) POSTs each payload to its org's
   webhook, if it has one, and records the result. A failed call is due again
   after a doubling backoff; after ``webhook_max_attempts`` it is FAILED. A task
   that dies before recording anything leaves the lease to expire, and the
   notification is published again.

Each notification exists once (see ``meterd.core.notifications``); the queue and the
webhook see it at least once, with a stable ``id`` to dedupe on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from meterd.core.notifications import Delivery
from meterd.storage.notifications import DeliveryResult, NotificationStore, Webhook

Payload = dict[str, Any]

#: First wait after a failed webhook call; it doubles per attempt up to MAX_BACKOFF.
FIRST_BACKOFF = timedelta(seconds=10)
MAX_BACKOFF = timedelta(hours=1)
#: A published notification that has not reported back by then is published again.
PUBLISH_LEASE = timedelta(minutes=10)
#: Notifications per ``meterd.notify`` task.
TASK_BATCH = 100


class WebhookSender(Protocol):
    def __call__(self, webhook: Webhook, payload: Payload) -> str | None:
        """POST ``payload``; None on success (2xx), else why it failed."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``Meterd-Signature`` header value: HMAC-SHA256 of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class HttpWebhookSender:
    """Calls webhooks with httpx: JSON body, the notification id and, if the org has
    a secret, a signature header the receiver can check."""

    def __init__(self, timeout: float, clock: Callable[[], float]) -> None:
        self.client = httpx.Client(timeout=timeout, follow_redirects=False)
        self.clock = clock

    def __call__(self, webhook: Webhook, payload: Payload) -> str | None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "meterd-webhook",
            "Meterd-Notification-Id": str(payload["id"]),
        }
        if webhook.secret:
            headers["Meterd-Signature"] = signature(webhook.secret, int(self.clock()), body)
        try:
            response = self.client.post(webhook.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}: {response.text[:200]}"

    def close(self) -> None:
        self.client.close()


@dataclass(slots=True)
class DeliveryReport:
    delivered: int = 0
    no_webhook: int = 0
    failed_attempts: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


class NotificationService:
    def __init__(
        self,
        store: NotificationStore,
        sender: WebhookSender,
        *,
        max_attempts: int,
    ) -> None:
        self.store = store
        self.sender = sender
        self.max_attempts = max_attempts

    def set_webhook(self, org: str, url: str | None, secret: str | None) -> bool:
        """Set (or with ``url`` None remove) where the org's notifications are POSTed;
        False if there is no such org."""
        return self.store.set_webhook(org, url, secret)

    def backoff(self, attempts: int) -> timedelta | None:
        """Wait before the next call after ``attempts`` failed ones; None: give up."""
        if attempts >= self.max_attempts:
            return None
        wait: timedelta = FIRST_BACKOFF * 2 ** (attempts - 1)
        return min(wait, MAX_BACKOFF)

    def dispatch(
        self,
        now: datetime,
        publish: Callable[[list[Payload]], None],
        *,
        limit: int = 10_000,
    ) -> int:
        """Publish due notifications (at most ``limit``), TASK_BATCH per task; returns
        how many were published. What fails to publish is published again after the lease."""
        published = 0
        while published < limit:
            claimed = self.store.claim_due(now, min(1000, limit - published), PUBLISH_LEASE)
            for i in range(0, len(claimed), TASK_BATCH):
                publish(claimed[i : i + TASK_BATCH])
            published += len(claimed)
            if len(claimed) < 1000:
                break
        return published

    def deliver(self, payloads: Sequence[Payload], now: datetime) -> DeliveryReport:
        report = DeliveryReport()
        waiting = self.store.pending_ids([str(p["id"]) for p in payloads])
        todo = [p for p in payloads if p["id"] in waiting]
        report.skipped = len(payloads) - len(todo)
        webhooks = self.store.webhooks([str(p["org"]) for p in todo])
        results = []
        for payload in todo:
            webhook = webhooks.get(str(payload["org"]))
            if webhook is None:
                results.append(DeliveryResult(payload["id"], Delivery.NO_WEBHOOK))
                report.no_webhook += 1
                continue
            error = self.sender(webhook, payload)
            if error is None:
                results.append(DeliveryResult(payload["id"], Delivery.DELIVERED))
                report.delivered += 1
            else:
                results.append(DeliveryResult(payload["id"], Delivery.PENDING, error))
                report.failed_attempts += 1
                report.errors.append(error)
        self.store.record(results, now, backoff=self.backoff)
        return report
