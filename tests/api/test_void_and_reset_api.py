"""``POST /v1/entitlements/{id}/void`` and ``/reset`` over HTTP: the permission, the
answer, retries, and the periods route showing a reset at once."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from meterd.core.timeutil import isoformat, utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from ..helpers import grant
from .conftest import key_for


def test_a_void_ahead_then_retried_answers_the_same(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    now = utcnow()
    ent = grant(
        runtime, starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=20), now=now
    )
    body = {"reason": "contract cancelled", "at": isoformat(now + timedelta(hours=1))}
    first = client.post(f"/v1/entitlements/{ent.id}/void", json=body, headers=acme)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "ACTIVE"  # until the instant
    again = client.post(f"/v1/entitlements/{ent.id}/void", json=body, headers=acme)
    assert again.json()["row_version"] == first.json()["row_version"]
    other = {**body, "at": isoformat(now + timedelta(hours=2))}
    assert (
        client.post(f"/v1/entitlements/{ent.id}/void", json=other, headers=acme).status_code == 409
    )
    past = {**body, "at": isoformat(now - timedelta(hours=1))}
    assert (
        client.post(f"/v1/entitlements/{ent.id}/void", json=past, headers=acme).status_code == 400
    )


def test_a_reset_shows_in_the_periods_at_once(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    now = utcnow()
    ent = grant(
        runtime, starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=20), now=now
    )
    answer = client.post(
        f"/v1/entitlements/{ent.id}/reset", json={"reason": "upgrade"}, headers=acme
    )
    assert answer.status_code == 200, answer.text
    periods = client.get(f"/v1/entitlements/{ent.id}/periods", headers=acme).json()
    rows = periods["data"] if isinstance(periods, dict) else periods
    assert len(rows) == 2 and rows[-1]["consumed"] == "0"


def test_void_and_reset_need_entitlements_manage(client: TestClient, runtime: Runtime) -> None:
    now = utcnow()
    ent = grant(
        runtime, starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=20), now=now
    )
    viewer = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    for action in ("void", "reset"):
        assert client.post(f"/v1/entitlements/{ent.id}/{action}", headers=viewer).status_code == 403
