"""Records events with a client and exits without closing it (the exit flush sends them)."""

from __future__ import annotations

import sys

from meterd.celery_config import create_app
from meterd.client import MeterdClient
from meterd.config import get_settings

count = int(sys.argv[1])
client = MeterdClient.over_celery(
    org="acme", source="exit-test", app=create_app(get_settings()), batch_size=1000,
    flush_interval=60.0,
)  # fmt: skip
for i in range(count):
    client.record("cust-exit", "api_calls", 1, event_id=f"exit-{i}")
# no close(): the interpreter exit must send the buffered events
