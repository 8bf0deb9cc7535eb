"""Holds from Python: hold units before work whose size is known only afterwards,
settle what it used, release the rest (docs/holds.md).

    from meterd.client import MeterdClient

    client = MeterdClient.over_http("https://meterd.example", key, org="acme", source="app")
    with client.hold("customer-42", "llm_tokens", max_tokens, seconds=120) as hold:
        reply = llm.complete(prompt, max_tokens=max_tokens)
        hold.settle(reply.usage.total_tokens)

* Entering asks the API for the hold (``POST .../reserve`` with ``hold_seconds``);
  a denied hold raises ``HoldDeniedError`` (nothing is held), so the work never
  starts without room for it.
* ``settle(n)`` consumes exactly ``n`` once (a retry of the same settle is
  answered the same by the API; the client retries a failed call with the same
  quantity). Leaving the block without settling, or by an exception, releases
  the hold: the units go back at once instead of waiting for the expiry.
* Holds are answered synchronously by the API: they need an HTTP client
  (``MeterdClient.over_http``, or ``HoldClient`` alone), not the Celery path.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from types import TracebackType
from typing import Any

from meterd.core.errors import ConflictError, InvalidError, UnavailableError
from meterd.core.quantity import format_quantity, parse_quantity


class HoldDeniedError(ConflictError):
    """The hold was not granted (denied, no entitlement, suspended): nothing is held."""

    def __init__(self, outcome: str, answer: dict[str, Any]) -> None:
        super().__init__(f"hold not granted: {outcome}")
        self.outcome = outcome
        self.answer = answer


class HoldClient:
    """The hold routes of a meterd API, over one ``httpx.Client``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        http: Any = None,
        timeout: float = 10.0,
        retries: int = 3,
        retry_backoff: float = 0.2,
    ) -> None:
        if http is None:
            import httpx

            if base_url is None or api_key is None:
                raise ValueError("give base_url and api_key, or an httpx client")
            http = httpx.Client(base_url=base_url, timeout=timeout, headers={"x-api-key": api_key})
        self.http = http
        self.retries = retries
        self.retry_backoff = retry_backoff

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
        """A hold, as a context manager (entering asks for it)."""
        body: dict[str, Any] = {
            "quantity": format_quantity(parse_quantity(quantity)),
            "idempotency_key": idempotency_key or uuid.uuid4().hex,
            "hold_seconds": seconds,
        }
        if data is not None:
            body["data"] = data
        if entitlement_id is not None:
            body["entitlement_id"] = entitlement_id
        return Held(self, f"/v1/customers/{customer}/features/{feature}/reserve", body)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call, retried with the same body while the server or the network
        fails (every hold route is idempotent); 4xx answers raise at once."""
        import httpx

        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(
                    method, path, json=body, headers={"content-type": "application/json"}
                )
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise UnavailableError(f"the meterd API did not answer: {exc}") from exc
            else:
                if response.status_code < 500:
                    break
                if attempt == self.retries:
                    raise UnavailableError(f"the meterd API answered {response.status_code}")
            time.sleep(self.retry_backoff * 2**attempt)
        detail = _detail(response)
        if response.status_code == 409:
            raise ConflictError(detail)
        if response.status_code >= 400:
            raise InvalidError(f"HTTP {response.status_code}: {detail}")
        answer: dict[str, Any] = response.json()
        return answer


class Held:
    """One hold: ``settle`` it, or leave the block to release it."""

    def __init__(self, client: HoldClient, reserve_path: str, body: dict[str, Any]) -> None:
        self.client = client
        self._reserve_path = reserve_path
        self._body = body
        #: The hold as the API last showed it (``GET /v1/holds/{id}``'s fields).
        self.hold: dict[str, Any] | None = None
        self.settled: Decimal | None = None

    @property
    def id(self) -> str:
        assert self.hold is not None, "enter the block first"
        return str(self.hold["id"])

    def __enter__(self) -> Held:
        answer = self.client.call("POST", self._reserve_path, self._body)
        if not answer["granted"]:
            raise HoldDeniedError(answer["outcome"], answer)
        self.hold = answer["hold"]
        return self

    def settle(self, quantity: str | int | Decimal) -> dict[str, Any]:
        """Consume exactly ``quantity`` (0 allowed) once; the rest is freed."""
        text = "0" if Decimal(str(quantity)) == 0 else format_quantity(parse_quantity(quantity))
        answer = self.client.call("POST", f"/v1/holds/{self.id}/settle", {"quantity": text})
        self.hold = answer["hold"]
        self.settled = Decimal(text)
        return answer

    def release(self) -> None:
        self.hold = self.client.call("POST", f"/v1/holds/{self.id}/release")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.hold is not None and self.settled is None:
            self.release()


def _detail(response: Any) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail)[:300] if detail else str(response.reason_phrase)
