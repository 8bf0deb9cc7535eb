"""Dead letters over HTTP: listed by cursor, shown, and replayed one or many, each
org seeing only its own letters."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.testing import event

from ..helpers import grant
from .conftest import key_for


def dead_letter_events(runtime: Runtime, n: int, customer: str = "nobody") -> None:
    """``n`` events of acme's that no entitlement takes (dead-lettered: no_entitlement)."""
    now = utcnow()
    batch = [event(customer=customer, event_id=f"dl-{i}", time=now) for i in range(n)]
    runtime.ingest.ingest(batch, now=now)


def test_the_list_pages_by_cursor_oldest_first(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    dead_letter_events(runtime, 5)
    first = client.get("/v1/dead-letters?limit=3", headers=acme).json()
    assert [dl["reason"] for dl in first["data"]] == ["no_entitlement"] * 3
    rest = client.get(f"/v1/dead-letters?limit=3&cursor={first['next']}", headers=acme).json()
    assert rest["next"] is None
    ids = [dl["event_id"] for dl in first["data"] + rest["data"]]
    assert sorted(ids) == [f"dl-{i}" for i in range(5)] and len(set(ids)) == 5


def test_a_letter_is_shown_with_its_payload(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    dead_letter_events(runtime, 1)
    (listed,) = client.get("/v1/dead-letters", headers=acme).json()["data"]
    shown = client.get(f"/v1/dead-letters/{listed['id']}", headers=acme).json()
    assert shown["payload"]["id"] == "dl-0" and shown["replayed_at"] is None


def test_replaying_one_letter_counts_it_once_the_entitlement_exists(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    dead_letter_events(runtime, 1, customer="cust-1")
    (letter,) = client.get("/v1/dead-letters", headers=acme).json()["data"]
    now = utcnow()
    grant(runtime, starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=20), now=now)
    replayed = client.post(f"/v1/dead-letters/{letter['id']}/replay", headers=acme)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {"replayed": 1, "still_dead": 0, "outcomes": {"accepted": 1}}
    assert client.get("/v1/dead-letters", headers=acme).json()["data"] == []
    again = client.post(f"/v1/dead-letters/{letter['id']}/replay", headers=acme).json()
    assert again["replayed"] == 0  # replayed already: nothing counts twice


def test_replaying_many_skips_ids_of_another_org(
    client: TestClient, runtime: Runtime, acme: dict[str, str], globex: dict[str, str]
) -> None:
    dead_letter_events(runtime, 2)
    ids = [dl["id"] for dl in client.get("/v1/dead-letters", headers=acme).json()["data"]]
    theirs = client.post("/v1/dead-letters/replay", json={"ids": ids}, headers=globex).json()
    assert theirs["replayed"] == 0
    assert client.get(f"/v1/dead-letters/{ids[0]}", headers=globex).status_code == 404
    ours = client.post("/v1/dead-letters/replay", json={"ids": ids}, headers=acme).json()
    assert ours == {"replayed": 2, "still_dead": 2, "outcomes": {"no_entitlement": 2}}


def test_dead_letters_need_the_events_write_permission(
    client: TestClient, runtime: Runtime
) -> None:
    viewer = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    assert client.get("/v1/dead-letters", headers=viewer).status_code == 403
    sender = key_for(runtime, "acme", Permission.EVENTS_WRITE)
    assert client.get("/v1/dead-letters", headers=sender).status_code == 200


def test_a_cursor_that_is_not_one_is_refused(client: TestClient, acme: dict[str, str]) -> None:
    response = client.get("/v1/dead-letters?cursor=nonsense", headers=acme)
    assert response.status_code == 400
