"""Review of issue 20 (item 7): ``/periods`` shows the same figures before and after a
flush, also for usage that landed in the next term: an event may be timed up to
``METERD_FUTURE_SKEW`` (5 minutes) ahead, so near a boundary it is counted in a
period the lifecycle job has not opened yet, and the flush then stores it."""

from __future__ import annotations

import shlex
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from meterd.core.domain import Outcome
from meterd.core.timeutil import isoformat, utcnow
from meterd.runtime import Runtime
from meterd.testing import event

from ..helpers import grant


def periods(client: TestClient, acme: dict[str, str], ent_id: str) -> list[tuple[str, str]]:
    response = client.get(f"/v1/entitlements/{ent_id}/periods", headers=acme)
    assert response.status_code == 200, response.text
    return [(p["period_start"], p["consumed"]) for p in response.json()]


def test_usage_timed_in_the_next_term_shows_in_periods_before_the_flush_as_after(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    now = utcnow()
    boundary = now + timedelta(minutes=2)  # the current daily term ends in 2 minutes
    body = {
        "customer_id": "cust-1", "feature": "api_calls", "quantity": "10",
        "starts_at": isoformat(boundary - timedelta(days=1)),
        "auto_renew": True, "term_value": 1, "term_unit": "DAY",
    }  # fmt: skip
    response = client.post("/v1/entitlements", json=body, headers=acme)
    assert response.status_code == 201, response.text
    ent_id = response.json()["id"]

    ahead = event(quantity="3", event_id="ahead", time=now + timedelta(minutes=4))
    assert runtime.ingest.ingest([ahead], now=now).outcomes == [Outcome.ACCEPTED]
    before = periods(client, acme, ent_id)
    runtime.flush.flush_all(utcnow())
    after = periods(client, acme, ent_id)
    assert after[-1] == (isoformat(boundary), "3")
    assert before == after


# -- the documented examples pass the bodies' strictness ----------------------------------

DOCS = Path(__file__).resolve().parents[2]


def curl_commands() -> list[tuple[str, list[str]]]:
    """Each ``curl`` command of README.md and docs/*.md that sends a body: (where, its
    arguments), continuation lines and multi-line quoted bodies joined."""
    found = []
    for doc in [DOCS / "README.md", *sorted((DOCS / "docs").glob("*.md"))]:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].lstrip().startswith("curl "):
                i += 1
                continue
            start, text = i, lines[i]
            while text.endswith("\\") or text.count("'") % 2:
                i += 1
                text = text.removesuffix("\\") + "\n" + lines[i]
            i += 1
            args = shlex.split(text)
            if "-d" in args:
                found.append((f"{doc.name}:{start + 1}", args))
    return found


@pytest.mark.parametrize(("where", "args"), curl_commands(), ids=lambda v: str(v)[:40])
def test_each_documented_curl_example_with_a_body_is_accepted(
    client: TestClient, runtime: Runtime, acme: dict[str, str], where: str, args: list[str]
) -> None:
    key = acme["x-api-key"]
    method = args[args.index("-X") + 1] if "-X" in args else "POST"
    (url,) = [a for a in args if a.startswith("localhost:")]
    if "$ENT" in url:  # an example on an entitlement: one the org has, dated now
        now = utcnow()
        start, end = now - timedelta(days=1), now + timedelta(days=30)
        ent = grant(runtime, "provider", "100000", starts_at=start, ends_at=end, now=now)
        url = url.replace("$ENT", str(ent.id))
    headers = dict(
        tuple(part.strip() for part in args[i + 1].replace("$KEY", key).split(":", 1))
        for i, a in enumerate(args)
        if a == "-H"
    )
    # curl -d sends application/x-www-form-urlencoded unless a header says otherwise
    headers.setdefault("content-type", "application/x-www-form-urlencoded")
    body = args[args.index("-d") + 1]
    response = client.request(
        method, url.removeprefix("localhost:8000"), content=body, headers=headers
    )
    assert response.status_code < 300, f"{where}: {response.status_code} {response.text}"
