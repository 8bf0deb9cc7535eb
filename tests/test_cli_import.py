"""``meterd import FILE``: JSON lines or a JSON array, streamed; prints what became of
every event; importing the same file twice counts it once."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from meterd import runtime as runtime_module
from meterd.cli import import_events
from meterd.core.terms import Term, TermUnit
from meterd.core.timeutil import utcnow
from meterd.services.catalog import NewEntitlement
from meterd.testing import event

from .cli_support import invoke


@pytest.fixture
def acme(cli_env: None) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    invoke("feature", "create", "--org", "acme", "api_calls")
    now = utcnow()
    runtime_module.get_runtime().catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id="cust-1", feature="api_calls", quantity=Decimal(100),
            starts_at=now - timedelta(days=400), auto_renew=True, term=Term.of(1, TermUnit.MONTH),
        ),
        now,
    )  # fmt: skip


def history(n: int = 30) -> list[dict[str, object]]:
    now = utcnow()
    return [
        event(quantity="1.5", event_id=f"h{i}", time=now - timedelta(days=60 + 9 * i))
        for i in range(n)
    ]


def test_import_of_json_lines_counts_once_and_a_second_import_is_all_duplicates(
    acme: None, tmp_path: Path
) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in history()) + "\n")
    first = invoke("import", str(path), "--org", "acme", "--batch-size", "7")
    assert "30 event(s): accepted 30, duplicate 0, dead-lettered 0" in first
    second = invoke("import", str(path), "--org", "acme", "--json")
    summary = json.loads(second)
    assert (summary["accepted"], summary["duplicate"], summary["dead_lettered"]) == (0, 30, 0)


def test_import_of_a_json_array_reports_dead_letters(acme: None, tmp_path: Path) -> None:
    nobody = event(customer="nobody", event_id="x", time=utcnow() - timedelta(days=90))
    events = [*history(3), nobody]
    path = tmp_path / "history.json"
    path.write_text(json.dumps(events, indent=1))
    out = invoke("import", str(path), "--org", "acme", "--json")
    summary = json.loads(out)
    assert (summary["accepted"], summary["dead_lettered"]) == (3, 1)
    assert summary["dead_lettered_by_reason"] == {"no_entitlement": 1}


@pytest.mark.parametrize("chunk", [1, 3, 64])
@pytest.mark.parametrize("as_array", [True, False])
def test_the_reader_streams_across_chunk_boundaries(
    monkeypatch: pytest.MonkeyPatch, chunk: int, as_array: bool
) -> None:
    monkeypatch.setattr(import_events, "CHUNK_BYTES", chunk)
    events = [{"id": f"é{i}", "data": {"quantity": 1.25 + i}} for i in range(5)]
    text = json.dumps(events) if as_array else "\n".join(json.dumps(e) for e in events)
    read = list(import_events.read_events(io.BytesIO(text.encode())))
    assert [e["id"] for e in read] == [e["id"] for e in events]
    assert [str(e["data"]["quantity"]) for e in read] == ["1.25", "2.25", "3.25", "4.25", "5.25"]


def test_a_file_that_is_not_json_is_refused_in_one_line(
    acme: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from .cli_support import refused

    path = tmp_path / "bad.json"
    path.write_text('[{"id": "a"}, {oops')
    assert "not JSON" in refused(monkeypatch, capsys, "import", str(path), "--org", "acme")
