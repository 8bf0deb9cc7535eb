"""``meterd demo``: sample data and a stream of events through a real worker.

It runs the whole metering loop on whatever the settings point at (by default
the embedded SQLite file and bundled Redis): create a feature, a plan and
entitlements from it, start a `celery worker` subprocess, publish events in batches
(with re-sent duplicates), wait until every event is counted, flush, and show
the balances, checking them against what was sent.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import IntegrityError

from meterd.celery_config import INGEST_TASK, create_app, worker_command
from meterd.domain import FeatureType
from meterd.errors import NotFoundError
from meterd.plans import TermUnit
from meterd.producer import chunked, usage_event
from meterd.quantity import from_micros, to_micros
from meterd.runtime import Runtime
from meterd.services.catalog import NewPlan
from meterd.timeutil import utcnow

ORG = "demo"
FEATURE = "api_calls"
PLAN = "demo-monthly"


@dataclass(frozen=True)
class DemoPlan:
    customers: int = 20
    events: int = 20_000
    batch_size: int = 500
    duplicate_share: float = 0.05
    quantity: Decimal = Decimal(2000)


def ensure_catalog(rt: Runtime, plan: DemoPlan) -> list[str]:
    now = utcnow()
    rt.catalog.create_org(ORG, "Demo organisation", now)
    try:
        rt.catalog.feature(ORG, FEATURE)
    except NotFoundError:
        rt.catalog.create_feature(ORG, FEATURE, now=now, type=FeatureType.FEATURE, units="calls")
    template = _ensure_plan(rt, plan.quantity)
    customers = [f"customer-{i:03d}" for i in range(plan.customers)]
    for customer in customers:
        if rt.balance.balances(ORG, customer, FEATURE, now):
            continue
        with contextlib.suppress(IntegrityError):  # a concurrent demo created it
            rt.catalog.entitlement_from_plan(ORG, template, customer, now - timedelta(days=1), now)
    return customers


def _ensure_plan(rt: Runtime, quantity: Decimal) -> uuid.UUID:
    """The demo's plan: the quantity for a month, auto-renewing, in family "demo"."""
    for existing in rt.catalog.plans_of(ORG):
        if existing.key == PLAN:
            return existing.id
    created = rt.catalog.create_plan(
        NewPlan(
            org=ORG,
            key=PLAN,
            feature=FEATURE,
            quantity=quantity,
            display_name="Demo monthly",
            term_value=1,
            term_unit=TermUnit.MONTH,
            auto_renew=True,
            families=("demo",),
        ),
        utcnow(),
    )
    return created.id


def consumed_micros(rt: Runtime, customers: list[str]) -> int:
    now = utcnow()
    return sum(
        to_micros(b.consumed) for c in customers for b in rt.balance.balances(ORG, c, FEATURE, now)
    )


def start_worker(log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            worker_command(),
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_demo(rt: Runtime, plan: DemoPlan, console: Console) -> bool:
    """Returns True if the database ended with exactly what was published."""
    customers = ensure_catalog(rt, plan)
    before = consumed_micros(rt, customers)
    rng = random.Random()
    run = uuid.uuid4().hex[:8]
    events = [
        usage_event(
            org=ORG,
            customer=rng.choice(customers),
            feature=FEATURE,
            quantity=rng.choice(["1", "0.5", "2.25"]),
            event_id=f"{run}-{i}",
            source="meterd-demo",
        )
        for i in range(plan.events)
    ]
    expected = sum(to_micros(Decimal(e["data"]["quantity"])) for e in events)
    stream = events + [rng.choice(events) for _ in range(int(plan.events * plan.duplicate_share))]
    rng.shuffle(stream)

    app = create_app(rt.settings)
    log = Path(".meterd") / "demo-worker.log"
    worker = start_worker(log)
    console.print(f"worker started (pid {worker.pid}, log {log})")
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            sent = progress.add_task("publishing events", total=len(stream))
            with app.producer_or_acquire() as producer:
                for batch in chunked(stream, plan.batch_size):
                    app.send_task(INGEST_TASK, args=[batch], producer=producer)
                    progress.advance(sent, len(batch))
            counted = progress.add_task("counting (units)", total=int(from_micros(expected)))
            deadline = time.monotonic() + 300
            while (done := consumed_micros(rt, customers) - before) < expected:
                progress.update(counted, completed=int(from_micros(done)))
                if time.monotonic() > deadline or worker.poll() is not None:
                    console.print("[red]the worker stopped counting[/red]")
                    return False
                time.sleep(0.2)
            progress.update(counted, completed=int(from_micros(expected)))
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        app.close()

    rt.flush.flush_all(utcnow(), max_batches=100)
    show_balances(rt, customers, console)
    total = consumed_micros(rt, customers) - before
    exact = total == expected
    verdict = "[green]exact[/green]" if exact else "[red]MISMATCH[/red]"
    console.print(
        f"published {len(stream):,} events ({len(stream) - len(events):,} re-sent duplicates); "
        f"counted {from_micros(total)} of {from_micros(expected)} units: {verdict}"
    )
    return exact


def show_balances(rt: Runtime, customers: list[str], console: Console) -> None:
    table = Table(title=f"{ORG} / {FEATURE} (flushed to {rt.settings.database_url})")
    for column in ("customer", "quantity", "consumed", "remaining", "overage"):
        table.add_column(column, justify="right" if column != "customer" else "left")
    now = utcnow()
    for customer in customers[:10]:
        for b in rt.balance.balances(ORG, customer, FEATURE, now):
            table.add_row(
                customer, str(b.quantity), str(b.consumed), str(b.remaining), str(b.overage)
            )
    if len(customers) > 10:
        table.add_row(f"... {len(customers) - 10} more", "", "", "", "")
    console.print(table)
