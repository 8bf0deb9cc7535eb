"""Webhook endpoints and the delivery log over HTTP: add (secret generated or given),
list, remove; private targets refused; the notifications with their deliveries and
attempts, paged; redeliver; WEBHOOKS:MANAGE required; each org sees only its own."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.services.notify import Sent
from meterd.storage.notifications import Webhook

from ..conftest import NOW
from ..helpers import grant
from .conftest import key_for

T = NOW + timedelta(hours=1)


class FakeSender:
    """Answers each call with the next status (then 200), recording it."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.calls: list[tuple[str, str]] = []

    def __call__(self, webhook: Webhook, msg_id: str, body: bytes) -> Sent:
        self.calls.append((webhook.url, msg_id))
        code = self.statuses.pop(0) if self.statuses else 200
        return Sent(code, None if code < 300 else f"HTTP {code}: ", 3)


def notify(runtime: Runtime, n: int = 1, sender: FakeSender | None = None) -> FakeSender:
    """``n`` notifications of acme (grants expiring at T), dispatched and delivered."""
    for i in range(n):
        grant(runtime, f"cust-{i}", ends_at=T)
    runtime.lifecycle.advance(T)
    sender = sender or FakeSender()
    service = runtime.notifications
    service.sender = sender
    batches: list[list[dict[str, Any]]] = []
    service.dispatch(T, batches.append)
    service.deliver([p for b in batches for p in b], T)
    return sender


def add(client: TestClient, headers: dict[str, str], url: str, **body: Any) -> Any:
    return client.post("/v1/webhook-endpoints", json={"url": url, **body}, headers=headers)


def test_an_endpoint_is_added_with_a_generated_secret_listed_and_removed(
    client: TestClient, acme: dict[str, str], globex: dict[str, str]
) -> None:
    answer = add(client, acme, "https://hooks.example.com/meterd")
    assert answer.status_code == 201
    made = answer.json()
    assert made["secret"].startswith("whsec_") and made["url"] == "https://hooks.example.com/meterd"
    listed = client.get("/v1/webhook-endpoints", headers=acme).json()["data"]
    assert [e["id"] for e in listed] == [made["id"]]
    assert "secret" not in listed[0] and made["secret"].startswith(listed[0]["secret_hint"][:-3])
    assert client.get("/v1/webhook-endpoints", headers=globex).json()["data"] == []
    assert client.delete(f"/v1/webhook-endpoints/{made['id']}", headers=globex).status_code == 404
    assert client.delete(f"/v1/webhook-endpoints/{made['id']}", headers=acme).status_code == 204
    assert client.delete(f"/v1/webhook-endpoints/{made['id']}", headers=acme).status_code == 404
    assert client.get("/v1/webhook-endpoints", headers=acme).json()["data"] == []


def test_a_given_secret_is_kept_and_a_bad_one_refused(
    client: TestClient, acme: dict[str, str]
) -> None:
    secret = "whsec_" + base64.b64encode(b"x" * 32).decode()
    assert add(client, acme, "https://h.example.com/", secret=secret).json()["secret"] == secret
    assert add(client, acme, "https://h.example.com/", secret="plain").status_code == 400


def test_a_private_target_is_refused_and_so_is_another_scheme(
    client: TestClient, acme: dict[str, str]
) -> None:
    for url in ("http://169.254.169.254/latest", "http://127.0.0.1:8080/", "http://[::1]/"):
        answer = add(client, acme, url)
        assert answer.status_code == 400
        assert "METERD_WEBHOOK_ALLOW_PRIVATE" in answer.text
    assert add(client, acme, "gopher://h.example.com/").status_code == 400


def test_the_routes_need_webhooks_manage(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    made = add(client, acme, "https://hooks.example.com/").json()
    note = notify(runtime).calls[0][1]
    other = key_for(runtime, "acme", Permission.ENTITLEMENTS_MANAGE, Permission.KEYS_MANAGE)
    manager = key_for(runtime, "acme", Permission.WEBHOOKS_MANAGE)
    calls = [
        ("POST", "/v1/webhook-endpoints", {"url": "https://x.example.com/"}),
        ("GET", "/v1/webhook-endpoints", None),
        ("DELETE", f"/v1/webhook-endpoints/{made['id']}", None),
        ("GET", "/v1/notifications", None),
        ("GET", f"/v1/notifications/{note}", None),
        ("POST", f"/v1/notifications/{note}/redeliver", None),
    ]
    for method, path, body in calls:
        assert client.request(method, path, json=body, headers=other).status_code == 403, path
    for method, path, body in calls:
        assert client.request(method, path, json=body, headers=manager).status_code < 300, path


def test_the_log_shows_each_delivery_with_its_attempts_paged_newest_first(
    client: TestClient, runtime: Runtime, acme: dict[str, str], globex: dict[str, str]
) -> None:
    add(client, acme, "https://a.example.com/")
    add(client, acme, "https://b.example.com/")
    sender = notify(runtime, 3, FakeSender(500))  # the very first call fails
    first = client.get("/v1/notifications?limit=2", headers=acme).json()
    rest = client.get(f"/v1/notifications?limit=2&cursor={first['next']}", headers=acme).json()
    assert rest["next"] is None
    notes = first["data"] + rest["data"]
    assert len({n["id"] for n in notes}) == 3 == len(sender.calls) / 2
    assert all(len(n["deliveries"]) == 2 for n in notes)
    failed = [d for n in notes for d in n["deliveries"] if d["status"] == "pending"]
    (one,) = failed
    assert one["history"] == [
        {
            "number": 1,
            "at": one["history"][0]["at"],
            "status_code": 500,
            "error": "HTTP 500: ",
            "duration_ms": 3,
        }
    ]
    assert one["next_attempt_at"] is not None
    pending = client.get("/v1/notifications?status=pending", headers=acme).json()["data"]
    assert [n["id"] for n in pending] == [n["id"] for n in notes if n["status"] == "pending"]
    assert client.get("/v1/notifications", headers=globex).json()["data"] == []
    assert client.get("/v1/notifications?cursor=nonsense", headers=acme).status_code == 400


def test_redeliver_queues_again_once_and_is_idempotent_while_pending(
    client: TestClient, runtime: Runtime, acme: dict[str, str], globex: dict[str, str]
) -> None:
    add(client, acme, "https://a.example.com/")
    note = notify(runtime).calls[0][1]
    shown = client.get(f"/v1/notifications/{note}", headers=acme).json()
    assert shown["status"] == "delivered"
    assert client.post(f"/v1/notifications/{note}/redeliver", headers=globex).status_code == 404
    first = client.post(f"/v1/notifications/{note}/redeliver", headers=acme).json()
    assert first["queued"] is True and first["notification"]["status"] == "pending"
    again = client.post(f"/v1/notifications/{note}/redeliver", headers=acme).json()
    assert again["queued"] is False
    (delivery,) = again["notification"]["deliveries"]
    assert (delivery["status"], delivery["attempts"], len(delivery["history"])) == ("pending", 0, 1)


def test_redeliver_without_an_endpoint_is_a_conflict(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant(runtime, ends_at=T)
    runtime.lifecycle.advance(T)
    (view,) = runtime.notifications.page("acme")
    runtime.notifications.deliver([{"id": view.notification.id, "org": "acme"}], T)
    answer = client.post(f"/v1/notifications/{view.notification.id}/redeliver", headers=acme)
    assert answer.status_code == 409


def test_a_delivery_retried_100_times_shows_its_total_and_the_kept_attempts(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    add(client, acme, "https://down.example.com/")
    runtime.notifications.max_attempts = 1000
    sender = notify(runtime, 1, FakeSender(*[500] * 99))  # the 100th call succeeds
    service = runtime.notifications
    for i in range(1, 100):
        at = T + i * timedelta(hours=2)
        batches: list[list[dict[str, Any]]] = []
        service.dispatch(at, batches.append)
        service.deliver([p for b in batches for p in b], at)
    assert len(sender.calls) == 100
    (note,) = client.get("/v1/notifications", headers=acme).json()["data"]
    (delivery,) = note["deliveries"]
    assert (note["status"], delivery["status"]) == ("delivered", "delivered")
    assert (delivery["attempts"], delivery["total_attempts"]) == (100, 100)
    assert [a["number"] for a in delivery["history"]] == [1, *range(82, 101)]
    assert [a["status_code"] for a in delivery["history"]] == [500] * 19 + [200]
