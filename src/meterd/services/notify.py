"""Notification delivery: publish the outbox to ``meterd.notify``, then call the
org's webhook endpoints.

Two steps, so that a slow or broken webhook never holds up metering:

1. ``dispatch`` (beat, and right after a flush or lifecycle run that created
   notifications) claims due rows with a lease and publishes their payloads as
   ``meterd.notify`` tasks, in batches.
2. ``deliver`` (the ``meterd.notify`` task) fans each notification out, the first
   time, into one delivery per live endpoint of its org, POSTs each due delivery
   and records the attempt (time, HTTP status or error, duration). A failed
   delivery is due again after a doubling backoff (10 s up to 1 h); after
   ``webhook_max_attempts`` it is FAILED. Each endpoint's delivery has its own
   attempts. A task that dies before recording anything leaves the lease to
   expire, and the notification is published again.

Every call is signed the Standard Webhooks way: ``webhook-id`` (the notification
id: the same on every retry and redelivery, receivers dedupe on it),
``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed by the endpoint's
``whsec_`` secret). Targets are checked by ``meterd.services.webhook_targets``
(the SSRF guard) at creation and at every connection.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from meterd.core.notifications import Delivery
from meterd.services.webhook_targets import (
    RefusedTarget,
    Resolver,
    check_secret,
    check_url,
    new_secret,
    resolve,
    sign,
)
from meterd.services.webhook_transport import GuardedTransport
from meterd.storage.models import WebhookEndpoint
from meterd.storage.notifications import NotificationStore, Webhook
from meterd.storage.webhooks import AttemptResult, DeliveryView, NotificationView

__all__ = ["DeliveryView", "Endpoint", "NotificationService", "NotificationView"]

Payload = dict[str, Any]

#: First wait after a failed webhook call; it doubles per attempt up to MAX_BACKOFF.
FIRST_BACKOFF = timedelta(seconds=10)
MAX_BACKOFF = timedelta(hours=1)
#: A published notification that has not reported back by then is published again.
PUBLISH_LEASE = timedelta(minutes=10)
#: Notifications per ``meterd.notify`` task.
TASK_BATCH = 100
#: Live endpoints an org may have.
MAX_ENDPOINTS = 20


@dataclass(frozen=True, slots=True)
class Sent:
    """How one call went: the HTTP status (None: no answer) and, unless it was a
    2xx, why it failed."""

    status_code: int | None
    error: str | None
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


class WebhookSender(Protocol):
    def __call__(self, webhook: Webhook, msg_id: str, body: bytes) -> Sent:
        """POST ``body`` signed as message ``msg_id``."""


def headers_for(webhook: Webhook, msg_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "meterd-webhook",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(webhook.secret, msg_id, timestamp, body),
    }


class HttpWebhookSender:
    """Calls endpoints with httpx: the payload's JSON, signed; no redirects, no proxy
    from the environment, every connection through the SSRF guard."""

    def __init__(
        self,
        timeout: float,
        clock: Callable[[], float],
        *,
        allow_private: bool = False,
        resolver: Resolver = resolve,
    ) -> None:
        self.client = httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            transport=GuardedTransport(allow_private=allow_private, resolver=resolver),
        )
        self.clock = clock

    def __call__(self, webhook: Webhook, msg_id: str, body: bytes) -> Sent:
        headers = headers_for(webhook, msg_id, body, int(self.clock()))
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            response = self.client.post(webhook.url, content=body, headers=headers)
        except RefusedTarget as exc:
            return Sent(None, str(exc)[:500], took())
        except httpx.HTTPError as exc:
            return Sent(None, f"{type(exc).__name__}: {exc}"[:500], took())
        if 200 <= response.status_code < 300:
            return Sent(response.status_code, None, took())
        return Sent(
            response.status_code, f"HTTP {response.status_code}: {response.text[:200]}", took()
        )

    def close(self) -> None:
        self.client.close()


@dataclass(slots=True)
class DeliveryReport:
    delivered: int = 0
    no_webhook: int = 0
    failed_attempts: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A webhook endpoint, as the edges show it."""

    id: uuid.UUID
    url: str
    secret: str
    created_at: datetime

    @classmethod
    def of(cls, row: WebhookEndpoint) -> Endpoint:
        return cls(row.id, row.url, row.secret, row.created_at)


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    endpoint: Endpoint
    #: The secret: shown when it was generated (the caller did not give one).
    secret: str
    generated: bool


class NotificationService:
    def __init__(
        self,
        store: NotificationStore,
        sender: WebhookSender,
        *,
        max_attempts: int,
        allow_private: bool = False,
    ) -> None:
        self.store = store
        self.sender = sender
        self.max_attempts = max_attempts
        self.allow_private = allow_private

    # -- endpoints ------------------------------------------------------------------

    def add_endpoint(self, org: str, url: str, secret: str | None, now: datetime) -> NewEndpoint:
        """A new endpoint of ``org``: ``url`` checked (InvalidError), ``secret`` a
        ``whsec_`` one or, if None, generated. ConflictError: the org has
        MAX_ENDPOINTS live ones (checked under the org's lock, with the insert)."""
        checked = check_url(url, allow_private=self.allow_private)
        generated = secret is None
        key = new_secret() if secret is None else check_secret(secret)
        row = self.store.endpoints.add_endpoint(org, checked, key, now, cap=MAX_ENDPOINTS)
        return NewEndpoint(Endpoint.of(row), key, generated)

    def endpoints(self, org: str) -> list[Endpoint]:
        return [Endpoint.of(e) for e in self.store.endpoints.endpoints(org)]

    def remove_endpoint(self, org: str, endpoint_id: uuid.UUID, now: datetime) -> bool:
        return self.store.endpoints.remove_endpoint(org, endpoint_id, now)

    def set_webhook(self, org: str, url: str | None, secret: str | None) -> bool:
        """``meterd org webhook``: the org's endpoints become the one of ``url`` (none
        if None), checked like a new endpoint; False if there is no such org."""
        if url is not None:
            check_url(url, allow_private=self.allow_private)
            if secret is not None:
                check_secret(secret)
        return self.store.set_webhook(org, url, secret)

    # -- the log --------------------------------------------------------------------

    def page(
        self,
        org: str,
        *,
        status: str | None = None,
        entitlement_id: uuid.UUID | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[NotificationView]:
        return self.store.endpoints.page(
            org, status=status, entitlement_id=entitlement_id, before=before, limit=limit
        )

    def one(self, org: str, notification_id: str) -> NotificationView:
        return self.store.endpoints.one(org, notification_id)

    def redeliver(self, org: str, notification_id: str, now: datetime) -> bool:
        """Queue the notification again to every live endpoint (False: it is still
        pending, nothing changes). The dispatcher publishes it on its next run."""
        return self.store.endpoints.redeliver(org, notification_id, now)

    # -- delivery -------------------------------------------------------------------

    def backoff(self, attempts: int) -> timedelta | None:
        """Wait before the next call after ``attempts`` failed ones; None: give up."""
        if attempts >= self.max_attempts:
            return None
        # The exponent is bounded: past ~43 doublings a timedelta overflows, and
        # METERD_WEBHOOK_MAX_ATTEMPTS allows 50 (20 doublings are far past MAX_BACKOFF).
        wait: timedelta = FIRST_BACKOFF * 2 ** min(attempts - 1, 20)
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
        todo = {str(p["id"]): p for p in payloads if p["id"] in waiting}
        report.skipped = len(payloads) - len(todo)
        if not todo:
            return report
        due = self.store.endpoints.due([(i, str(p["org"])) for i, p in todo.items()], now)
        bodies = {i: json.dumps(p, separators=(",", ":")).encode() for i, p in todo.items()}
        results = []
        for delivery in due:
            sent = self.sender(
                Webhook(delivery.url, delivery.secret),
                delivery.notification_id,
                bodies[delivery.notification_id],
            )
            results.append(
                AttemptResult(delivery.id, sent.ok, sent.status_code, sent.error, sent.duration_ms)
            )
            if sent.ok:
                report.delivered += 1
            else:
                report.failed_attempts += 1
                report.errors.append(sent.error or "")
        self.store.endpoints.record(list(todo), results, now, backoff=self.backoff)
        statuses = self.store.statuses(list(todo))
        report.no_webhook = sum(1 for v in statuses.values() if v == Delivery.NO_WEBHOOK.value)
        return report
