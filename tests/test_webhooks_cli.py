"""``meterd webhooks``: add, list, remove endpoints; the deliveries and redeliver, as
the API's /v1/webhook-endpoints and /v1/notifications do."""

from __future__ import annotations

import json
from datetime import timedelta

from typer.testing import CliRunner

from meterd import runtime as runtime_module
from meterd.cli import app
from meterd.core.timeutil import utcnow
from meterd.services.notify import Sent
from meterd.storage.notifications import Webhook

from .helpers import grant

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_webhooks_commands_manage_endpoints_and_show_deliveries(cli_env: None) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    made = json.loads(
        invoke("webhooks", "add", "--org", "acme", "https://u:pw@hooks.example.com/in", "--json")
    )
    assert (
        made["secret"].startswith("whsec_") and made["url"] == "https://u:***@hooks.example.com/in"
    )
    listed = json.loads(invoke("webhooks", "list", "--org", "acme", "--json"))
    assert [e["id"] for e in listed] == [made["id"]] and listed[0]["secret"].endswith("...")
    shown = json.loads(invoke("webhooks", "list", "--org", "acme", "--show-secrets", "--json"))
    assert shown[0]["secret"] == made["secret"]
    refused = runner.invoke(app, ["webhooks", "add", "--org", "acme", "http://169.254.169.254/"])
    assert refused.exit_code != 0

    # A notification, delivered to the endpoint by a stand-in sender.
    rt = runtime_module.get_runtime()
    rt.catalog.create_feature("acme", "api_calls", now=utcnow())
    now = utcnow()
    grant(rt, starts_at=now - timedelta(days=1), ends_at=now + timedelta(seconds=1), now=now)
    later = now + timedelta(seconds=2)
    rt.lifecycle.advance(later)
    calls: list[str] = []

    def sender(webhook: Webhook, msg_id: str, body: bytes) -> Sent:
        calls.append(msg_id)
        return Sent(204, None, 1)

    rt.notifications.sender = sender
    batches: list[list[dict[str, object]]] = []
    rt.notifications.dispatch(later, batches.append)
    rt.notifications.deliver([p for b in batches for p in b], later)
    (note,) = json.loads(invoke("webhooks", "deliveries", "--org", "acme", "--json"))
    assert note["status"] == "delivered" and note["id"] == calls[0]
    (delivery,) = note["deliveries"]
    assert [a["status_code"] for a in delivery["attempts"]] == [204]
    assert "queued again" in invoke("webhooks", "redeliver", "--org", "acme", note["id"])
    assert "still pending" in invoke("webhooks", "redeliver", "--org", "acme", note["id"])
    assert "removed" in invoke("webhooks", "remove", "--org", "acme", made["id"][:8])
    assert json.loads(invoke("webhooks", "list", "--org", "acme", "--json")) == []
