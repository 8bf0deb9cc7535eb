"""The producer client: ``record()`` usage from application code, batched in the background.

    from meterd.client import MeterdClient

    client = MeterdClient.over_celery(org="acme", source="api-gateway")   # or .over_http(...)
    client.record("customer-42", "api_calls", 1)
    ...
    client.close()          # also runs at interpreter exit

* ``record`` only appends to an in-memory buffer: it never waits on the network.
  It gives the event an id at once (a UUIDv7), so a batch that is sent again
  after a failure dedupes at the worker: retries are idempotent.
* A background thread sends a batch when ``batch_size`` events are waiting or
  ``flush_interval`` seconds have passed, retrying a failed send with backoff
  (``max_retries`` times) before reporting it to ``on_error`` and counting it in
  ``stats.failed``.
* Events the receiver refuses for good are not retried (sending them again
  cannot help): a ``SendRefusedError`` from the transport, such as the events
  the HTTP API reports ``invalid`` (it dead-letters them) or a 401/403 for the
  whole batch. They are counted in ``stats.failed``, logged (logger
  ``meterd.client``) and handed to ``on_error`` with the error, which lists each
  event's reason; the rest of the batch counts as sent.
* A full buffer (``max_buffered``) makes ``record`` wait at most
  ``block_timeout`` seconds for room, then raise ``BufferFullError``: the caller
  decides, nothing is dropped silently.
* ``flush()`` sends everything buffered and waits; ``close()`` flushes and stops
  the thread, and runs at exit for clients not closed by hand.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from meterd.celery_config import INGEST_QUEUE, INGEST_TASK, create_app
from meterd.config import get_settings
from meterd.core.errors import InvalidError, UnavailableError
from meterd.core.ids import uuid7
from meterd.core.meters import USAGE_EVENT_TYPE, check_event_type
from meterd.core.quantity import format_quantity, parse_quantity
from meterd.hold_client import Held, HoldClient
from meterd.producer import usage_event

Event = dict[str, Any]

log = logging.getLogger("meterd.client")


class Transport(Protocol):
    def send(self, events: list[Event]) -> None:
        """Deliver a batch or raise: ``SendRefusedError`` for events refused for
        good (reported at once), anything else to have the batch retried."""


class BufferFullError(UnavailableError):
    """The buffer stayed full for ``block_timeout`` seconds: the sender cannot keep up."""


class SendRefusedError(InvalidError):
    """The receiver refused ``events`` for good, so the client does not retry them.
    ``reasons`` holds one reason per refused event; the other events of the batch,
    if any, were accepted."""

    def __init__(self, message: str, events: list[Event], reasons: list[str]) -> None:
        super().__init__(message)
        self.events = events
        self.reasons = reasons


class CeleryTransport:
    """Publishes ``meterd.ingest_batch`` tasks (one per batch) with a Celery app."""

    def __init__(self, app: Any, queue: str = INGEST_QUEUE) -> None:
        self.app = app
        self.queue = queue

    def send(self, events: list[Event]) -> None:
        self.app.send_task(INGEST_TASK, args=[events], queue=self.queue)


class HttpTransport:
    """POSTs batches to ``/v1/events`` of a meterd API (the org comes from the key).

    Events the API reports ``invalid`` in its 202 answer are dead-lettered there;
    sending them again would not help, so ``send`` raises ``SendRefusedError`` for
    them (the client counts them failed and reports them to its ``on_error``). A
    401 or 403 (a wrong key, or one without ``EVENTS:WRITE``) refuses the whole
    batch the same way. Anything else that fails (5xx, connection errors) raises
    as it is, and the client retries it with the same event ids.

    ``on_rejected``, if given, is called first with the API's result entries for
    the invalid events (kept for callers that passed it; ``on_error`` sees the
    same events).
    """

    #: Statuses that retrying cannot change.
    REFUSED_STATUSES = frozenset({401, 403})

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        on_rejected: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        import httpx

        self.client = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            headers={"x-api-key": api_key, "content-type": "application/cloudevents-batch+json"},
        )
        self.on_rejected = on_rejected

    def send(self, events: list[Event]) -> None:
        response = self.client.post("/v1/events", content=json.dumps(events))
        if response.status_code in self.REFUSED_STATUSES:
            reason = f"HTTP {response.status_code} {_problem(response)}"
            raise SendRefusedError(
                f"the API refused the batch ({reason}); check the API key and that it "
                "has EVENTS:WRITE",
                events,
                [reason] * len(events),
            )
        response.raise_for_status()
        rejected = [r for r in response.json()["results"] if r["status"] != "queued"]
        if not rejected:
            return
        if self.on_rejected is not None:
            self.on_rejected(rejected)
        refused = [events[r["index"]] for r in rejected]
        reasons = [str(r.get("reason") or r["status"]) for r in rejected]
        shown = "; ".join(f"{e.get('id')}: {why}" for e, why in zip(refused, reasons, strict=True))
        raise SendRefusedError(
            f"the API refused {len(refused)} of {len(events)} event(s) as invalid "
            f"(dead-lettered there): {shown[:500]}",
            refused,
            reasons,
        )


def _problem(response: Any) -> str:
    """The ``detail`` of an error answer (problem details or FastAPI's), else its phrase."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail)[:200] if detail else str(response.reason_phrase)


@dataclass
class ClientStats:
    recorded: int = 0
    sent: int = 0
    failed: int = 0
    batches: int = 0
    retries: int = 0


class MeterdClient:
    def __init__(
        self,
        transport: Transport,
        *,
        org: str,
        source: str,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_buffered: int = 100_000,
        block_timeout: float = 0.05,
        max_retries: int = 5,
        retry_backoff: float = 0.2,
        on_error: Callable[[Exception, list[Event]], None] | None = None,
    ) -> None:
        if batch_size < 1 or max_buffered < batch_size:
            raise ValueError("need 1 <= batch_size <= max_buffered")
        self.transport = transport
        self.org = org
        self.source = source
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.block_timeout = block_timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.on_error = on_error
        self.stats = ClientStats()
        self._buffer: deque[Event] = deque()
        self._in_flight = 0
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="meterd-client", daemon=True)
        self._thread.start()
        _open_clients.add(self)

    @classmethod
    def over_celery(cls, *, org: str, source: str, app: Any = None, **options: Any) -> MeterdClient:
        """A client publishing with meterd's Celery app (``METERD_BROKER_URL``) or yours."""
        if app is None:
            app = create_app(get_settings())
        return cls(CeleryTransport(app), org=org, source=source, **options)

    @classmethod
    def over_http(
        cls, base_url: str, api_key: str, *, org: str, source: str, **options: Any
    ) -> MeterdClient:
        return cls(HttpTransport(base_url, api_key), org=org, source=source, **options)

    def hold(
        self,
        customer: str,
        feature: str,
        quantity: str | int | Decimal,
        *,
        seconds: int,
        idempotency_key: str | None = None,
        data: dict[str, Any] | None = None,
        entitlement_id: str | None = None,
    ) -> Held:
        """A hold as a context manager: settle what the work used, or leave the
        block to release it (``meterd.hold_client``; needs ``over_http``)."""
        if not isinstance(self.transport, HttpTransport):
            raise InvalidError(
                "holds are answered synchronously by the API: use MeterdClient.over_http,"
                " or meterd.hold_client.HoldClient"
            )
        holds = HoldClient(http=self.transport.client)
        return holds.hold(
            customer,
            feature,
            quantity,
            seconds=seconds,
            idempotency_key=idempotency_key,
            data=data,
            entitlement_id=entitlement_id,
        )

    def record(
        self,
        customer: str,
        feature: str,
        quantity: str | int | Decimal,
        *,
        event_id: str | None = None,
        time: datetime | None = None,
        entitlement_id: str | None = None,
    ) -> str:
        """Buffer one usage event; returns its id (pass your own for idempotency
        across processes, e.g. a request id)."""
        # Refuse a bad quantity here, not in a dead letter; send it as plain text
        # (Decimal("1E+3") is 1000, and "1E+3" is not in the grammar).
        text = format_quantity(parse_quantity(quantity))
        event = usage_event(
            org=self.org,
            customer=customer,
            feature=feature,
            quantity=text,
            event_id=event_id or uuid7().hex,
            source=self.source,
            time=(time or _now()).isoformat(),
            entitlement_id=entitlement_id,
        )
        return self._buffered(event)

    def record_event(
        self,
        customer: str,
        type: str,
        data: dict[str, Any],
        *,
        event_id: str | None = None,
        time: datetime | None = None,
    ) -> str:
        """Buffer one raw event (any CloudEvents ``type`` but ``meterd.usage``): the
        features whose meters read that type count it, e.g. ``llm.request`` with
        ``{"model": "gpt-4o", "usage": {"input_tokens": 1200}}`` (docs/meters.md).
        Returns its id."""
        if type == USAGE_EVENT_TYPE:
            raise ValueError("a meterd.usage event is recorded with record()")
        check_event_type(type)
        if not isinstance(data, dict):
            raise ValueError("data must be a JSON object")
        event = {
            "specversion": "1.0",
            "id": event_id or uuid7().hex,
            "source": self.source,
            "type": type,
            "subject": customer,
            "org": self.org,
            "time": (time or _now()).isoformat(),
            "data": data,
        }
        return self._buffered(event)

    def _buffered(self, event: dict[str, Any]) -> str:
        deadline = _monotonic() + self.block_timeout
        with self._lock:
            if self._closed:
                raise RuntimeError("the client is closed")
            while len(self._buffer) >= self.max_buffered:
                left = deadline - _monotonic()
                if left <= 0:
                    raise BufferFullError(
                        f"{self.max_buffered} events waiting: the transport cannot keep up"
                    )
                self._lock.wait(left)
            self._buffer.append(event)
            self.stats.recorded += 1
            if len(self._buffer) >= self.batch_size:
                self._lock.notify_all()
        return str(event["id"])

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Send everything buffered now; True once it is all sent or reported failed."""
        deadline = None if timeout is None else _monotonic() + timeout
        with self._lock:
            self._flush_requested = True
            self._lock.notify_all()
            while self._buffer or self._in_flight:
                left = None if deadline is None else deadline - _monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush, then stop the background thread."""
        done = self.flush(timeout)
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout)
        _open_clients.discard(self)
        return done

    def __enter__(self) -> MeterdClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the background thread ---------------------------------------------------------

    _flush_requested = False

    def _run(self) -> None:
        next_send = _monotonic() + self.flush_interval
        while True:
            with self._lock:
                while (
                    not self._closed
                    and not self._flush_requested
                    and (len(self._buffer) < self.batch_size and _monotonic() < next_send)
                ):
                    self._lock.wait(max(0.0, next_send - _monotonic()))
                if self._closed and not self._buffer:
                    return
                batch = [
                    self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))
                ]
                if not self._buffer:
                    self._flush_requested = False
                self._in_flight = len(batch)
                self._lock.notify_all()  # room in the buffer
            if batch:
                self._send(batch)
            with self._lock:
                self._in_flight = 0
                self._lock.notify_all()
            next_send = _monotonic() + self.flush_interval

    def _send(self, batch: list[Event]) -> None:
        for attempt in range(self.max_retries + 1):
            try:
                self.transport.send(batch)
            except SendRefusedError as exc:  # for good: retrying cannot help
                accepted = len(batch) - len(exc.events)
                if accepted > 0:
                    self.stats.sent += accepted
                    self.stats.batches += 1
                self._failed(exc, exc.events)
                return
            except Exception as exc:
                if attempt == self.max_retries:
                    self._failed(exc, batch)
                    return
                self.stats.retries += 1
                time.sleep(min(self.retry_backoff * 2**attempt, 5.0))
            else:
                self.stats.sent += len(batch)
                self.stats.batches += 1
                return

    def _failed(self, exc: Exception, events: list[Event]) -> None:
        """Count, log and report events that will not be delivered."""
        self.stats.failed += len(events)
        log.error("%d usage event(s) not delivered: %s: %s", len(events), type(exc).__name__, exc)
        if self.on_error is not None:
            self.on_error(exc, events)


def _now() -> datetime:
    from meterd.core.timeutil import utcnow

    return utcnow()


def _monotonic() -> float:
    return time.monotonic()


_open_clients: weakref.WeakSet[MeterdClient] = weakref.WeakSet()


@atexit.register
def _flush_open_clients() -> None:
    """Clients not closed by hand still send what they buffered before exit."""
    for client in list(_open_clients):
        client.close(timeout=10)
