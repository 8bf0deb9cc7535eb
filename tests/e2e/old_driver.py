"""What the in-place upgrade test asks of the OLD meterd, run under its code.

    PYTHONPATH=<old tree>/src python tests/e2e/old_driver.py <command> [arguments]

Settings come from the METERD_* environment, as for any meterd process. Commands:

* ``migrate``: the old version's migrations (``meterd db upgrade`` of that version);
* ``setup <customers> <limit>...``: org ``acme``, feature ``api_calls`` and, for each
  customer ``cust-<n>``, one entitlement per limit, ending in that order; prints
  ``{customer: [[entitlement id, limit], ...]}`` as JSON;
* ``publish <events.json> <batch size>``: publishes the events as the old producer does;
* ``flush``: one flush of everything waiting, as the old ``meterd flush``.

This file is imported only by the old code's interpreter: it uses the module
paths of b6213b7 (``meterd.migrate``, ``meterd.timeutil``), not today's.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from decimal import Decimal
from typing import Any


def main(argv: list[str]) -> None:
    from meterd.config import Settings

    settings = Settings()
    command, args = argv[0], argv[1:]
    if command == "migrate":
        from meterd.migrate import upgrade

        upgrade(settings.database_url)
        return
    from meterd.timeutil import utcnow

    from meterd.runtime import Runtime

    rt = Runtime.from_settings(settings)
    now = utcnow()
    if command == "setup":
        from meterd.services.catalog import NewEntitlement

        customers, limits = int(args[0]), args[1:]
        rt.catalog.create_org("acme", "Acme", now)
        rt.catalog.create_feature("acme", "api_calls", now=now)
        grants: dict[str, list[list[str]]] = {}
        for c in range(customers):
            customer = f"cust-{c}"
            grants[customer] = [
                [
                    str(
                        rt.catalog.create_entitlement(
                            NewEntitlement(
                                org="acme",
                                customer_id=customer,
                                feature="api_calls",
                                quantity=Decimal(limit),
                                starts_at=now - timedelta(days=1),
                                ends_at=now + timedelta(days=10 + i),
                            ),
                            now,
                        ).id
                    ),
                    limit,
                ]
                for i, limit in enumerate(limits)
            ]
        print(json.dumps(grants))
    elif command == "publish":
        from meterd.celery_config import create_app
        from meterd.producer import publish_batches

        with open(args[0]) as f:
            events: list[dict[str, Any]] = json.load(f)
        app = create_app(settings)
        publish_batches(app, events, int(args[1]))
        app.close()
    elif command == "flush":
        rt.flush.flush_all(now, max_batches=100)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
